//! Integration tests: the real tallyd binary with real plugin libraries.
