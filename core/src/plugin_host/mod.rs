//! The plugin host: loads plugin libraries and runs their instances.
//!
//! Architecture invariant: this module is the only place in the daemon with
//! `unsafe` (in `loader.rs` and `instance.rs`); everything above it sees safe
//! types: [`PluginRegistry`], [`PluginLibrary`], [`SourceInstance`].

mod instance;
mod loader;

pub use instance::{CallError, HostServices, Redact, SourceInstance};
pub use loader::{PluginLibrary, PluginLoadError, PluginRegistry, load};
