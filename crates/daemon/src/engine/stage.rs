//! Checking a file before it joins a source's drop directory: the source's
//! own plugin reads a directory that holds only that file, through a new
//! instance of the plugin made with the source's settings but that
//! directory, and nothing it answers is stored.

use std::path::Path;

use super::*;

/// How far back a staged check reaches: a form may be handed in late, or
/// re-handed for an old quarter, and a day outside the window would be
/// silently not read, the file judged empty.
const CHECK_REACH_DAYS: u64 = 3660;

impl SourceRuntime {
    /// The directory this source's plugin reads files from: the `dir`
    /// setting, when the plugin's settings schema declares one (the plugins
    /// that read spreadsheets units hand in: `csv_form`, `xuexi`). `None`
    /// for a source that reads a platform's API.
    pub fn drop_dir(&self) -> Option<std::path::PathBuf> {
        let schema = self.instance.plugin.description.settings_schema.as_ref()?;
        schema.get("properties")?.get("dir")?;
        let dir = self.config.settings.get("dir")?;
        Some(std::path::PathBuf::from(dir.as_str()?))
    }
}

impl Engine {
    /// Runs the plugin of the form source `source_id` on `dir` in place of
    /// the source's own directory, storing nothing: a new plugin instance
    /// made from the source's settings with `dir` replaced, asked for every
    /// day up to today, with the source's resume state (so a plugin that
    /// remembers what it imported judges the file as the next run would).
    /// What it answers passes the checks a real run's answer passes
    /// ([`Engine::accept`]): what a real run would drop is a warning here.
    pub async fn check_staged(
        self: &Arc<Self>,
        source_id: &str,
        dir: &Path,
    ) -> Result<Collected, RunError> {
        let source = self
            .source(source_id)
            .cloned()
            .ok_or_else(|| RunError::UnknownSource(source_id.to_owned()))?;
        if source.drop_dir().is_none() {
            return Err(RunError::Internal(format!(
                "source \"{source_id}\" reads no files (its plugin has no `dir` setting)"
            )));
        }
        let mut config = SourceConfig::clone(&source.config);
        config.settings.set("dir", dir.display().to_string().into());
        let secrets = self.config.secrets().clone();
        let services = HostServices {
            http: tally_host::http_agent(Duration::from_secs(10), Duration::from_secs(90)),
            // A file check has no business on the network.
            runtime: None,
            clock: self.clock.clone(),
            redact: Arc::new(move |s: &str| secrets.redact(s)),
            http_timeout: Duration::from_secs(30),
            gate: self.http_gate.clone(),
        };
        let lib = source.instance.plugin.clone();
        let created_config = config.clone();
        let runner = tokio::task::spawn_blocking(move || {
            super::create::create_runner(&lib, &created_config, &services)
        })
        .await
        .map_err(|e| RunError::Internal(e.to_string()))?;
        let runner = match runner {
            Ok(runner) => Arc::new(runner),
            Err(e) => {
                return Ok(Collected {
                    result: RunResult::Error,
                    error: Some(self.config.secrets().redact(&e.to_string())),
                    observations: Vec::new(),
                    warnings: Vec::new(),
                    state: None,
                    error_kind: None,
                    retry_after: None,
                    uncovered: Vec::new(),
                });
            }
        };
        let staged = Arc::new(SourceRuntime {
            config: SourceConfigRef::own(config),
            index: source.index,
            instance: runner,
            busy: Arc::default(),
            calling: Arc::default(),
            breaker: Default::default(),
            unrecorded: Default::default(),
            interval: source.interval,
            units: source.units.clone(),
            allowed_units: source.allowed_units.clone(),
            emits: source.emits.clone(),
            catalogue: source.catalogue.clone(),
        });
        let state = {
            let store = self.store.clone();
            let id = source.config.id.clone();
            tokio::task::spawn_blocking(move || store.resume_point(&id))
                .await
                .map_err(|e| RunError::Internal(e.to_string()))??
                .state
        };
        let today = self.today();
        let from = today
            .checked_sub_days(chrono::Days::new(CHECK_REACH_DAYS))
            .unwrap_or(today);
        let call = staged.calling.clone().lock_owned().await;
        self.collect(&staged, call, Window::new(from, today), state)
            .await
    }
}
