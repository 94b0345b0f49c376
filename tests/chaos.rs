//! The replicas' chaos test (issue 13, acceptance 2), in a test binary of
//! its own: three replicas, a lone daemon and PostgreSQL running 300
//! sources a second take both of the CI machine's cores, and the test
//! checks that every tick ran, which a test running beside it could make
//! untrue. Cargo runs test binaries one after another. Run it through
//! `cargo xtask test` (or `cargo xtask test -p tallyd --test chaos`), which
//! builds the plugin libraries first.

#![allow(clippy::disallowed_methods)]

mod support;

mod replicas_chaos;
