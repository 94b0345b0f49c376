//! The plugin host: loads plugin libraries and runs their instances.
//!
//! Architecture invariant: this crate is the only place in the daemon with
//! `unsafe` (in `loader.rs` and `instance.rs`); everything above it sees safe
//! types: [`PluginRegistry`], [`PluginLibrary`], [`SourceInstance`].

mod instance;
mod loader;
mod process;
pub mod settings;

use std::sync::Arc;

use tally_plugin::{CollectRequest, CollectResponse, Created};

pub use instance::{CallError, HostServices, HttpGate, Redact, SourceInstance, http_agent};
pub use loader::{PluginLibrary, PluginLoadError, PluginRegistry, load};
pub use process::{ProcessInstance, serve_child};

/// A source's plugin, in the daemon's process or in a child of its own.
pub struct SourceRunner {
    /// What the configured source said it emits.
    pub created: Created,
    pub plugin: Arc<PluginLibrary>,
    kind: RunnerKind,
}

enum RunnerKind {
    InProcess(SourceInstance),
    Process(ProcessInstance),
}

impl SourceRunner {
    pub fn in_process(instance: SourceInstance) -> SourceRunner {
        SourceRunner {
            created: instance.created.clone(),
            plugin: instance.plugin().clone(),
            kind: RunnerKind::InProcess(instance),
        }
    }

    pub fn process(plugin: Arc<PluginLibrary>, instance: ProcessInstance) -> SourceRunner {
        SourceRunner {
            created: instance.created.clone(),
            plugin,
            kind: RunnerKind::Process(instance),
        }
    }

    /// One collection run. Blocks: call it from a blocking-pool thread.
    pub fn collect_blocking(&self, request: &CollectRequest) -> Result<CollectResponse, CallError> {
        match &self.kind {
            RunnerKind::InProcess(i) => i.collect_blocking(request),
            RunnerKind::Process(p) => p.collect_blocking(request),
        }
    }

    /// Gives up on the current run: in-process plugins are asked to stop
    /// (`host.cancelled()`); an isolated one is killed.
    pub fn cancel(&self) {
        match &self.kind {
            RunnerKind::InProcess(i) => i.cancel(),
            RunnerKind::Process(p) => p.cancel(),
        }
    }

    /// The HTTP requests made through the daemon since the last call (the
    /// run's API calls); `None` for an isolated plugin, whose child makes its own.
    pub fn take_http_requests(&self) -> Option<u64> {
        match &self.kind {
            RunnerKind::InProcess(i) => Some(i.take_http_requests()),
            RunnerKind::Process(_) => None,
        }
    }
}
