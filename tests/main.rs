//! Integration tests: the real `tallyd` binary with real plugin libraries.
//!
//! One test binary (one link step) with a module per topic and shared helpers
//! in `support`. Run them through `cargo xtask test`, which first builds the
//! plugin libraries (`cargo test` alone does not build cdylibs) and the test
//! fixture plugins of `tests/fixtures`.

// Tests read their own environment (CI, PATH, the fixture directory) and
// time their waits with the real clock; clippy.toml's rules are for the daemon.
#![allow(clippy::disallowed_methods)]

mod support;

mod bad_input;
mod collection;
mod contract;
mod county;
mod crash_loop;
mod demo;
mod exec;
mod feed;
mod http_edges;
mod isolation;
mod narrative;
mod observability;
mod one_store;
mod operator;
mod pages;
mod pages_actions;
mod pages_downloads;
mod pages_narrative;
mod pages_upload;
mod paging;
mod plugins;
mod postgres_store;
mod prometheus_replicas;
mod redaction;
mod reload;
mod replicas;
mod reports;
mod security;
mod settings;
mod sources;
mod targets;
mod template;
mod values;
mod wechat;
mod weibo;
mod xuexi;
