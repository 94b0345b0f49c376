//! Local simulators of the platforms' HTTP APIs, listening on 127.0.0.1 only,
//! with deterministic data and switches to inject the platforms' failures.
//! Used by the plugins' tests, the integration tests and `tally-demo`.
pub mod wechat;
pub mod weibo;
