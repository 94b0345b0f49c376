//! A running source's configuration, read from the engine's [`Config`]
//! rather than copied out of it.

use std::ops::Deref;
use std::sync::Arc;

use tally_config::{Config, SourceConfig};

/// What [`super::SourceRuntime::config`] holds: the source's entry of the
/// configuration the engine was built from, or a configuration of its own
/// (a staged check runs the source with other settings). A copy per source
/// held the plugin settings twice: at 10,000 sources they were 25 MB of
/// small JSON maps in the config and 25 MB again in the engine.
#[derive(Clone)]
pub struct SourceConfigRef(Inner);

#[derive(Clone)]
enum Inner {
    Shared(Arc<Config>, usize),
    Own(Arc<SourceConfig>),
}

impl SourceConfigRef {
    /// Source number `index` of `config`, which must have it.
    pub(crate) fn shared(config: Arc<Config>, index: usize) -> SourceConfigRef {
        assert!(index < config.sources.len(), "no source number {index}");
        SourceConfigRef(Inner::Shared(config, index))
    }

    pub(crate) fn own(config: SourceConfig) -> SourceConfigRef {
        SourceConfigRef(Inner::Own(Arc::new(config)))
    }
}

impl Deref for SourceConfigRef {
    type Target = SourceConfig;

    fn deref(&self) -> &SourceConfig {
        match &self.0 {
            Inner::Shared(config, index) => &config.sources[*index],
            Inner::Own(config) => config,
        }
    }
}

impl PartialEq for SourceConfigRef {
    fn eq(&self, other: &SourceConfigRef) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for SourceConfigRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}
