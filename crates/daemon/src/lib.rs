//! The tally daemon as a library: the engine that runs sources, the scheduler,
//! the HTTP API, the metrics, the summaries and the report files. `tallyd` and
//! `tally-demo` are thin binaries over it, and tests call it directly.

#![forbid(unsafe_code)]

pub mod claims;
pub mod clock;
pub mod daemon;
pub mod engine;
pub mod http;
pub mod http_guard;
pub mod metrics;
pub mod narrative;
pub mod pages;
pub mod reports;
pub mod scheduler;
pub mod summary;

#[cfg(test)]
mod inproc_tests;
