//! The tally daemon as a library: everything `tallyd` does, callable from tests.

pub mod clock;
pub mod config;
pub mod domain;
pub mod plugin_host;
