//! `exec` plugin (being written).
