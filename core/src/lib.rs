//! The tally daemon as a library: everything `tallyd` does, callable from tests.

pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod domain;
pub mod engine;
pub mod exec_check;
pub mod http;
pub mod http_guard;
pub mod metrics;
pub mod new_plugin;
pub mod plugin_host;
pub mod reports;
pub mod scheduler;
pub mod store;
pub mod summary;

#[cfg(test)]
mod inproc_tests;
