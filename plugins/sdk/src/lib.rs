//! # Writing a tally source plugin
//!
//! A plugin teaches `tallyd` to read numbers from one more platform. It is a
//! small Rust crate built as a shared library (`cdylib`) that the daemon loads
//! at start. You write safe Rust: a type implementing [`Plugin`] and one call
//! of [`export_plugin!`]. This crate does everything unsafe.
//!
//! ## The crate
//!
//! ```toml
//! [package]
//! name = "tally-plugin-hello"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [lib]
//! name = "tally_hello"
//! crate-type = ["cdylib", "rlib"]   # cdylib for tallyd, rlib for your tests
//!
//! [dependencies]
//! tally-plugin = { path = "../sdk" }
//! serde = { version = "1", features = ["derive"] }
//!
//! [dev-dependencies]
//! tally-plugin = { path = "../sdk", features = ["testkit"] }
//! ```
//!
//! ## The plugin
//!
//! ```
//! use serde::Deserialize;
//! use tally_plugin::{
//!     export_plugin, CollectRequest, CollectResponse, Description, Error, Host,
//!     IndicatorDecl, Kind, Observation, Plugin,
//! };
//!
//! /// The settings an operator writes under `[sources.settings]`. Unknown keys
//! /// are refused, so a typo is reported instead of ignored.
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! pub struct Settings {
//!     per_day: f64,
//! }
//!
//! pub struct Hello {
//!     per_day: f64,
//! }
//!
//! impl Plugin for Hello {
//!     const NAME: &'static str = "hello";
//!     type Settings = Settings;
//!
//!     fn describe() -> Description {
//!         Description::new("emits a constant number every day")
//!             .indicator(IndicatorDecl::new("hello_count", "问候次数", Kind::Count, "次"))
//!     }
//!
//!     fn new(settings: Settings, _host: &Host) -> Result<Self, Error> {
//!         if settings.per_day < 0.0 {
//!             return Err(Error::settings("per_day: must not be negative"));
//!         }
//!         Ok(Hello { per_day: settings.per_day })
//!     }
//!
//!     fn collect(&mut self, req: &CollectRequest, host: &Host) -> Result<CollectResponse, Error> {
//!         host.info(&format!("collecting {} days", req.window.days().count()));
//!         let mut out = CollectResponse::default();
//!         for day in req.window.days() {
//!             out.observations.push(Observation::new("hello_count", day, self.per_day));
//!         }
//!         Ok(out)
//!     }
//! }
//!
//! export_plugin!(Hello);
//! # fn main() {}
//! ```
//!
//! `cargo build` then leaves `libtally_hello.so` (`.dylib` on macOS,
//! `tally_hello.dll` on Windows) in `target/debug`, named after `[lib] name`. Put it in one of the daemon's
//! `plugin_dirs`, name it in a source (`plugin = "hello"`), and check with
//! `tallyd plugins` and `tallyd check --config FILE`.
//!
//! ## The rules of the road
//!
//! - **Time and the window.** Collect exactly the days of `req.window` (both
//!   ends inclusive, in `req.timezone`). Re-collecting a day replaces its old
//!   values, so reading a few recent days again to pick up late corrections is
//!   safe. Get the current time from [`Host::now`], never the system clock, so
//!   tests can fix it.
//! - **Units.** An observation without a unit belongs to the source's own unit
//!   (`req.default_unit`). A plugin that reads data for many units maps the
//!   names it finds with [`CollectRequest::resolve_unit`] and reports names it
//!   cannot map as warnings, naming the place.
//! - **Errors.** Return an [`Error`] whose message names the place (setting,
//!   file and row, endpoint and error code) and says what to do. A problem that
//!   spoils one row is a warning ([`CollectResponse::warn`]); one that spoils
//!   the run is an error. A panic is caught and becomes an error of that run.
//!   A warning about a place in a file starts with its [`Place`]
//!   (`FILE: row N: column "HEADER": ...`), which the daemon reads back
//!   ([`Placed::parse`]) to show a clerk each problem of an uploaded form by
//!   row and column.
//! - **HTTP.** Use [`Host::http`]: the daemon performs the request with its own
//!   client (timeouts, proxies, TLS, metrics), and tests can answer it from
//!   fixtures. Do not start threads or async runtimes of your own.
//! - **Secrets** arrive already resolved in the settings. Never log them.
//! - **Resume state.** Return `state` in the response to remember something
//!   between runs (a cursor, a file hash); it is stored in the same transaction
//!   as the observations and handed back as `req.state`.
//!
//! ## Testing without the daemon
//!
//! With the `testkit` feature, [`testkit::TestHost`] runs your plugin's real
//! `new` and `collect` with a fixed clock and recorded HTTP answers (or a local
//! test server), see the [`testkit`] module.

pub mod abi;
pub mod charset;
pub mod place;
pub mod protocol;
pub mod schema;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

use std::sync::Arc;

/// The SDK's `schemars`, for deriving the settings' JSON Schema
/// ([`Description::settings_schema`]).
pub use schemars;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

/// The date and time crate the protocol's types use, re-exported so that a
/// plugin names days and times without a dependency of its own.
///
/// ```
/// use tally_plugin::chrono::NaiveDate;
/// assert!(NaiveDate::from_ymd_opt(2026, 11, 27).is_some());
/// ```
pub use chrono;
/// The JSON crate of resume state and settings, re-exported for API plugins.
///
/// ```
/// use tally_plugin::serde_json::{Value, json};
/// let v: Value = json!({"cursor": 42});
/// assert_eq!(v["cursor"], 42);
/// ```
pub use serde_json;

pub use place::{Place, Placed};
pub use protocol::{
    CollectRequest, CollectResponse, Created, Description, Error, ErrorKind, HttpRequest,
    HttpResponse, IndicatorDecl, IndicatorRef, Kind, Level, Observation, PROTOCOL_VERSION, UnitRef,
    Window, strip_unit_suffix,
};

/// A source plugin: one value of the implementing type exists per configured
/// source, created from that source's settings.
///
/// The daemon never calls one value from two threads at once, but successive
/// calls may come from different threads, hence `Send`.
pub trait Plugin: Sized + Send + 'static {
    /// The name operators write in `plugin = "..."`. Lower case, `[a-z0-9_]`.
    const NAME: &'static str;

    /// The settings, deserialized from the source's `[sources.settings]` table.
    /// Use `#[serde(deny_unknown_fields)]` so typos are errors.
    type Settings: DeserializeOwned;

    /// What the plugin is and which indicators it can always emit.
    fn describe() -> Description;

    /// Checks the settings and builds the source. Runs at daemon start and in
    /// `tallyd check`; must not do slow I/O.
    fn new(settings: Self::Settings, host: &Host) -> Result<Self, Error>;

    /// The indicator ids this configured source emits. The default is every
    /// indicator of [`Plugin::describe`]; plugins whose indicators come from
    /// their settings override it.
    fn emits(&self) -> Vec<String> {
        Self::describe()
            .indicators
            .into_iter()
            .map(|i| i.id)
            .collect()
    }

    /// One collection run over `request.window`.
    fn collect(&mut self, request: &CollectRequest, host: &Host) -> Result<CollectResponse, Error>;
}

/// Exports a [`Plugin`] type as the library's ABI v1 entry point. Call it once,
/// at the crate root, with the type.
///
/// ```
/// # use tally_plugin::*;
/// # pub struct Nothing;
/// # impl Plugin for Nothing {
/// #     const NAME: &'static str = "nothing";
/// #     type Settings = serde_json::Value;
/// #     fn describe() -> Description { Description::new("does nothing") }
/// #     fn new(_: serde_json::Value, _: &Host) -> Result<Self, Error> { Ok(Nothing) }
/// #     fn collect(&mut self, _: &CollectRequest, _: &Host) -> Result<CollectResponse, Error> {
/// #         Ok(CollectResponse::default())
/// #     }
/// # }
/// tally_plugin::export_plugin!(Nothing);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        /// The ABI v1 entry point of this plugin library.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn tally_plugin_entry_v1() -> *const $crate::abi::Descriptor {
            static DESCRIPTOR: $crate::abi::StaticDescriptor =
                $crate::abi::StaticDescriptor::new::<$plugin>(
                    env!("CARGO_PKG_VERSION"),
                    cfg!(panic = "unwind"),
                );
            DESCRIPTOR.as_ptr()
        }
    };
}

/// Services the daemon offers a plugin: logging, the clock, cancellation and HTTP.
///
/// In the daemon it is backed by the host vtable; in tests by
/// [`testkit::TestHost`] (or any [`LocalHost`]).
pub struct Host {
    backend: Backend,
}

enum Backend {
    Ffi(abi::FfiHost),
    Local(Arc<dyn LocalHost>),
}

/// Host services implemented in Rust, for running a plugin without the ABI:
/// the test kit, or a process that hosts a plugin on the daemon's behalf.
pub trait LocalHost: Send + Sync {
    fn log(&self, level: Level, message: &str);
    fn now(&self) -> DateTime<Utc>;
    fn cancelled(&self) -> bool {
        false
    }
    fn http(&self, request: &HttpRequest) -> Result<HttpResponse, Error>;
}

impl Host {
    pub(crate) fn from_ffi(host: abi::FfiHost) -> Host {
        Host {
            backend: Backend::Ffi(host),
        }
    }

    /// A host backed by Rust code (tests, out-of-process hosting).
    pub fn local(services: Arc<dyn LocalHost>) -> Host {
        Host {
            backend: Backend::Local(services),
        }
    }

    /// Writes a line to the daemon's log, tagged with the source.
    pub fn log(&self, level: Level, message: &str) {
        match &self.backend {
            Backend::Ffi(h) => h.log(level, message),
            Backend::Local(h) => h.log(level, message),
        }
    }

    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }

    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }

    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message);
    }

    /// The current time according to the daemon (a fixed time in tests).
    pub fn now(&self) -> DateTime<Utc> {
        match &self.backend {
            Backend::Ffi(h) => h.now(),
            Backend::Local(h) => h.now(),
        }
    }

    /// True once the daemon has given up on this run (timeout, shutdown): stop
    /// early and return what you have or an error.
    pub fn cancelled(&self) -> bool {
        match &self.backend {
            Backend::Ffi(h) => h.cancelled(),
            Backend::Local(h) => h.cancelled(),
        }
    }

    /// Performs an HTTP request through the daemon. Any HTTP status is an
    /// `Ok`; an `Err` means no answer (refused, timed out, bad URL).
    ///
    /// ```no_run
    /// # fn f(host: &tally_plugin::Host) -> Result<(), tally_plugin::Error> {
    /// use tally_plugin::HttpRequest;
    /// let resp = host.http(&HttpRequest::get("http://127.0.0.1:8080/stats").query("day", "2026-11-27"))?;
    /// if resp.status != 200 {
    ///     return Err(tally_plugin::Error::upstream(format!("stats: HTTP {}", resp.status)));
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// The body arrives as text decoded by the charset it declares (see
    /// [`charset`]), or as bytes with [`HttpRequest::body_as_bytes`]; a daemon
    /// too old to honour the latter is an error here rather than a body
    /// silently turned into text.
    pub fn http(&self, request: &HttpRequest) -> Result<HttpResponse, Error> {
        let response = match &self.backend {
            Backend::Ffi(h) => h.http(request),
            Backend::Local(h) => h.http(request),
        }?;
        if request.body_as_bytes {
            // Query strings may carry tokens: name the endpoint without them.
            let endpoint = request.url.split('?').next().unwrap_or_default();
            response.bytes().map_err(|e| {
                Error::internal(format!("{} {endpoint}: {}", request.method, e.message))
            })?;
        }
        Ok(response)
    }
}

/// Checks that `id` is an indicator id (`[a-z][a-z0-9_]*`); the error names
/// the setting it came from.
///
/// ```
/// use tally_plugin::check_indicator_id;
/// assert!(check_indicator_id("indicator", "wechat_posts").is_ok());
/// let e = check_indicator_id("fields.Posts", "Posts").unwrap_err();
/// assert_eq!(e.message, "fields.Posts: \"Posts\" is not an indicator id ([a-z][a-z0-9_]*)");
/// ```
pub fn check_indicator_id(setting: &str, id: &str) -> Result<(), Error> {
    let ok = id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::settings(format!(
            "{setting}: {id:?} is not an indicator id ([a-z][a-z0-9_]*)"
        )))
    }
}

/// The first 200 characters of a response body on one line, for an error
/// message that shows what a platform answered instead of what was expected.
///
/// ```
/// assert_eq!(tally_plugin::body_snippet("<html>\n502</html>"), "<html> 502</html>");
/// assert_eq!(tally_plugin::body_snippet("  "), "(empty body)");
/// assert!(tally_plugin::body_snippet(&"x".repeat(500)).ends_with("..."));
/// ```
pub fn body_snippet(body: &str) -> String {
    let one_line: String = body
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.chars().count() > 200 {
        format!("{one_line}...")
    } else if one_line.trim().is_empty() {
        "(empty body)".to_owned()
    } else {
        one_line
    }
}

/// Deserializes settings, naming the failing field by its path
/// (`mapping[2].path: missing field`), since a byte column of the JSON the
/// daemon made from TOML would mean nothing to an operator.
pub(crate) fn parse_settings<P: Plugin>(bytes: &[u8]) -> Result<P::Settings, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let settings = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = strip_json_position(&inner.to_string());
        if path.is_empty() || path == "." {
            Error::settings(message)
        } else {
            Error::settings(format!("{path}: {message}"))
        }
    })?;
    // Bytes after the settings mean a broken message, not settings to ignore.
    de.end()
        .map_err(|e| Error::settings(strip_json_position(&e.to_string())))?;
    Ok(settings)
}

/// serde_json appends " at line 1 column 57": a position in JSON the operator never wrote.
fn strip_json_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests;
