//! The configuration file: parsing, validation,
//! secret resolution, and the positions needed to report any problem as
//! `file:line:column: key.path: message`.
//!
//! Loading happens in three steps:
//!
//! 1. toml parses the text into a spanned tree; `location::KeyIndex` records where
//!    every key path is. Syntax errors stop here.
//! 2. serde turns the tree into the private `raw` types (`deny_unknown_fields`
//!    everywhere except `sources.settings`). Type errors and unknown keys stop here.
//! 3. [`Config::parse`] checks what serde cannot (ids, references between sections,
//!    cron expressions, durations, secrets) and collects *every* problem before
//!    failing, sorted by position, so an operator fixes the file in one pass.
//!
//! A fourth check, [`Config::check_emits`], needs the loaded plugins and is run by
//! the daemon afterwards.

#![forbid(unsafe_code)]

mod location;
mod metrics;
mod narrative;
mod schedule;
mod secrets;
mod settings;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod reference_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use tally_domain::{Kind, MAX_VALUE, show_value};

pub use location::Location;
pub use metrics::{METRIC_WINDOWS, MetricsConfig};
pub use narrative::{NarrativeTemplate, describe as template_error, syntax as template_syntax};
pub use secrets::{Redactor, Secret};
pub use settings::Settings;

use location::{KeyIndex, join_key};
use secrets::Resolver;

/// A problem found in the configuration, at a place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read; the cause is the `source`.
    #[error("cannot read configuration file {}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// One problem: `FILE:LINE:COL: KEY: message`.
    #[error("{location}: {message}")]
    Invalid { location: Location, message: String },
    /// Several problems, one per line, sorted by position.
    #[error("{}", problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("\n"))]
    Several { problems: Vec<Problem> },
}

impl ConfigError {
    /// The error for a list of problems (at least one), sorted by position.
    pub fn from_problems(mut problems: Vec<Problem>) -> ConfigError {
        problems.sort_by(|a, b| {
            (a.location.line, a.location.column).cmp(&(b.location.line, b.location.column))
        });
        problems.dedup();
        if problems.len() == 1 {
            let Problem { location, message } = problems.remove(0);
            ConfigError::Invalid { location, message }
        } else {
            ConfigError::Several { problems }
        }
    }

    /// Every problem, whatever the variant (none for `Io`).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Io { .. } => Vec::new(),
            ConfigError::Invalid { location, message } => vec![Problem {
                location: location.clone(),
                message: message.clone(),
            }],
            ConfigError::Several { problems } => problems.clone(),
        }
    }
}

/// A loaded, validated configuration. Secrets are resolved; `Debug` does not show them.
#[derive(Clone)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub units: Vec<UnitConfig>,
    pub indicators: Vec<IndicatorConfig>,
    pub targets: Vec<TargetConfig>,
    pub sources: Vec<SourceConfig>,
    pub reports: ReportsConfig,
    /// `[store]`: where observations and runs are kept; `None` for the
    /// embedded SQLite store in `daemon.data_dir`.
    pub store: Option<StoreConfig>,
    /// `[metrics]`: how much `/metrics` exposes.
    pub metrics: MetricsConfig,
    /// The file this configuration was read from, as given.
    pub path: PathBuf,
    secrets: Redactor,
    keys: KeyIndex,
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub listen: SocketAddr,
    pub timezone: Tz,
    /// As written: a relative path is resolved against the daemon's current directory.
    pub data_dir: PathBuf,
    /// As written, searched in order.
    pub plugin_dirs: Vec<PathBuf>,
    pub api_token: Option<Secret>,
    pub max_concurrent_runs: usize,
    /// At most this many HTTP requests of in-daemon plugins in flight per host.
    pub http_per_host_concurrency: usize,
    /// At most this many HTTP requests per second per host, if set.
    pub http_per_host_rate: Option<f64>,
    /// The names (`name` or `name:port`, lower case) requests may carry as
    /// `Host` besides the loopback ones (on a loopback listen); empty for any
    /// host beyond loopback. Against DNS rebinding: see `tally-daemon`'s
    /// `http_guard`.
    pub hosts: Vec<String>,
}

/// `[store]`: a PostgreSQL database instead of the embedded SQLite store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// `postgresql://...` with its `${env:}`/`${file:}` references resolved.
    /// A secret as a whole, since it may hold the password; `Debug` never
    /// shows it, and its password is redacted from every text.
    pub url: Secret,
    /// `lease`: how long a claimed run is held for a replica that renews
    /// it every third of it; the time a dead replica's runs wait before
    /// another replica runs them again.
    pub lease: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UnitConfig {
    /// `[a-z0-9_-]+` segments joined by `/`: the path from the root.
    pub id: String,
    pub name: String,
    pub headcount: Option<u32>,
    pub aliases: Vec<String>,
}

impl UnitConfig {
    /// The parent's id: the id without its last segment.
    pub fn parent(&self) -> Option<&str> {
        self.id.rsplit_once('/').map(|(parent, _)| parent)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct IndicatorConfig {
    pub id: String,
    pub name: String,
    pub kind: Kind,
    /// The display unit: 篇, 次, 分, 人.
    pub unit: String,
    /// `accumulates = "year"`: each value is the total since 1 January
    /// (本年积分), so targets compare it with the yearly minimum pro-rated
    /// to the period's end and `change` is growth (see `summary::targets`).
    /// Only for `level` indicators.
    pub accumulates: Option<Accumulates>,
    /// `per_capita = true`: summaries give the value per head of staff.
    pub per_capita: bool,
    /// The range an observed value must lie in (`min`, `max`), both
    /// inclusive: by default from the kind's [`Kind::default_min`] to
    /// [`tally_domain::MAX_VALUE`]. Anything else is refused at accept time.
    pub min: f64,
    pub max: f64,
    /// `Some(plugin)` for an indicator not in `[[indicators]]` that the
    /// plugin declares in its `describe()` (see
    /// [`Config::adopt_plugin_indicators`]); `None` for a configured one.
    pub declared_by: Option<String>,
}

impl IndicatorConfig {
    /// The `[[indicators]]` table that declares this indicator in the file.
    pub fn toml_snippet(&self) -> String {
        let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
        format!(
            "[[indicators]]\nid = {}\nname = {}\nkind = {}\nunit = {}\n",
            quote(&self.id),
            quote(&self.name),
            quote(self.kind.as_str()),
            quote(&self.unit)
        )
    }
}

/// Since when an indicator's values accumulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accumulates {
    /// From 1 January: the value on a day is the total of the year so far.
    Year,
}

impl Accumulates {
    pub fn as_str(self) -> &'static str {
        match self {
            Accumulates::Year => "year",
        }
    }
}

/// Whom a target's minimum applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    Entity,
    Unit,
}

impl Per {
    pub fn as_str(self) -> &'static str {
        match self {
            Per::Entity => "entity",
            Per::Unit => "unit",
        }
    }
}

/// The period a target's minimum is set for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetPeriod {
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl TargetPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetPeriod::Day => "day",
            TargetPeriod::Week => "week",
            TargetPeriod::Month => "month",
            TargetPeriod::Quarter => "quarter",
            TargetPeriod::Year => "year",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TargetConfig {
    pub indicator: String,
    pub per: Per,
    pub period: TargetPeriod,
    pub min: f64,
    /// Within a running period, scale `min` by the elapsed days.
    pub prorate: bool,
    /// The units the target applies to; `None` means all.
    pub units: Option<Vec<String>>,
}

/// `[reports]`: the report files written automatically, by default each
/// quarter for the quarter just ended.
#[derive(Clone)]
pub struct ReportsConfig {
    pub enabled: bool,
    /// When to write, read in the daemon's time zone; each tick writes the
    /// report of the last quarter that ended before it.
    pub schedule: cron::Schedule,
    /// The expression as written (or the default).
    pub schedule_text: String,
    /// In the order written, without repeats.
    pub formats: Vec<ReportFormat>,
    /// As written; `None` means `data_dir/reports` (see [`Config::reports_dir`]).
    pub dir: Option<PathBuf>,
    /// Also write the previous quarter's report once the collections run at
    /// start have finished (the demo uses it).
    pub write_on_start: bool,
    /// `narrative_template`: the operator's template of the 情况报告, read and
    /// checked at load; `None` for the default one built into the daemon.
    pub narrative_template: Option<NarrativeTemplate>,
}

impl fmt::Debug for ReportsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The parsed schedule's Debug is a page of fields: show the text.
        f.debug_struct("ReportsConfig")
            .field("enabled", &self.enabled)
            .field("schedule", &self.schedule_text)
            .field("formats", &self.formats)
            .field("dir", &self.dir)
            .field("write_on_start", &self.write_on_start)
            .field(
                "narrative_template",
                &self.narrative_template.as_ref().map(|t| &t.path),
            )
            .finish()
    }
}

/// A source as configured. `PartialEq` compares every field (the schedule
/// by its text), so that a reload tells a changed source from an unchanged
/// one without a hand-kept list of fields; see also
/// [`SourceConfig::same_instance`].
#[derive(Clone, PartialEq)]
pub struct SourceConfig {
    pub id: String,
    pub plugin: String,
    /// The unit(s) the source's data belongs to, as written: `unit = ...`
    /// gives one. The source may report for these units and every unit
    /// below them; [`SourceConfig::coverage`] says which are expected to.
    pub units: Vec<String>,
    /// Which units are expected to report through the source (a unit that
    /// does not is 未报送): every unit of the subtrees of `units`, or exactly
    /// the units listed.
    pub coverage: Coverage,
    /// Shared by the sources whose expression is written alike: a parsed
    /// schedule holds a set of every second, minute, ..., year it allows
    /// (a few kB), which 10,000 sources on one schedule paid 10,000 times.
    pub schedule: Arc<cron::Schedule>,
    /// The expression as written in the file.
    pub schedule_text: String,
    pub lookback_days: u32,
    pub timeout: Duration,
    pub backfill_from: Option<NaiveDate>,
    pub enabled: bool,
    /// Where the plugin runs: in the daemon, or in a child process of its own.
    pub isolation: Isolation,
    /// Address-space limit of the child process (`isolation = "process"`).
    pub memory_limit_mb: u64,
    /// More attempts after a transient failure, within the same run.
    pub retries: u32,
    /// The wait before the first retry; doubled for each further one.
    pub retry_backoff: Duration,
    /// Consecutive failed runs after which scheduled runs back off; 0 never.
    pub breaker_after: u32,
    /// `[sources.indicators]`: an indicator id the plugin emits, mapped to
    /// the configured indicator its observations are stored as (`Some`) or
    /// dropped (`None`, written `false`). Ids not in the map are stored as
    /// the plugin names them.
    pub indicators: BTreeMap<String, Option<String>>,
    /// Handed to the plugin as JSON, secrets resolved. `Debug` shows only the keys.
    pub settings: Settings,
}

/// `coverage = "subtrees" | "listed"` on a source: which of its units are
/// expected to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Coverage {
    /// Every unit of the subtrees of the source's units (a form every
    /// bureau fills in). The default of `units = [...]`.
    Subtrees,
    /// Exactly the units listed (the accounts a platform has), not the
    /// units below them. The default of `unit = "..."`.
    Listed,
}

impl Coverage {
    pub fn as_str(self) -> &'static str {
        match self {
            Coverage::Subtrees => "subtrees",
            Coverage::Listed => "listed",
        }
    }
}

/// `isolation = "none" | "process"` on a source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// The plugin runs inside the daemon: fastest; a crash in it ends the daemon.
    #[default]
    None,
    /// The plugin runs in a `tallyd plugin-host` child: a crash, a hang or a
    /// memory blow-up ends only that run.
    Process,
}

impl SourceConfig {
    /// Whether a source's plugin instance (and its in-memory caches) can be
    /// kept across a reload: nothing the instance was created with, or that
    /// the daemon derives from it once, changed (plugin, settings, isolation,
    /// memory limit, units and coverage, indicator mapping). The id is not
    /// compared: the caller pairs sources by id. Every field is named here,
    /// so a new one cannot be left out by accident: it fails to compile
    /// until it is sorted in.
    pub fn same_instance(&self, new: &SourceConfig) -> bool {
        let SourceConfig {
            id: _,
            plugin,
            units,
            coverage,
            // Read per run or by the scheduler, never by the plugin.
            schedule: _,
            schedule_text: _,
            lookback_days: _,
            timeout: _,
            backfill_from: _,
            enabled: _,
            retries: _,
            retry_backoff: _,
            breaker_after: _,
            isolation,
            memory_limit_mb,
            indicators,
            settings,
        } = self;
        *plugin == new.plugin
            && *units == new.units
            && *coverage == new.coverage
            && *isolation == new.isolation
            && *memory_limit_mb == new.memory_limit_mb
            && *indicators == new.indicators
            && *settings == new.settings
    }

    /// The id an observation of indicator `emitted` is stored under: the
    /// mapped id, `emitted` itself when unmapped, `None` when dropped.
    pub fn map_indicator<'a>(&'a self, emitted: &'a str) -> Option<&'a str> {
        match self.indicators.get(emitted) {
            Some(mapped) => mapped.as_deref(),
            None => Some(emitted),
        }
    }

    /// The configured indicator ids a source stores, given the ids its
    /// plugin emits: mapped, without the dropped ones, in the plugin's order.
    pub fn mapped_emits(&self, emitted: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(emitted.len());
        for id in emitted {
            if let Some(mapped) = self.map_indicator(id)
                && !out.iter().any(|o| o == mapped)
            {
                out.push(mapped.to_owned());
            }
        }
        out
    }

    /// The longest gap between two consecutive runs over the five weeks after
    /// `after` (at most 5,000 runs): how stale a healthy source can get.
    /// `0 7 * * 1-5` gives three days (Friday to Monday).
    pub fn longest_gap(&self, after: DateTime<Utc>, tz: Tz) -> Option<Duration> {
        let start = after.with_timezone(&tz);
        let end = start + chrono::Duration::days(35);
        let runs: Vec<DateTime<Tz>> = self
            .schedule
            .after(&start)
            .take(5000)
            .take_while(|t| *t < end)
            .collect();
        runs.windows(2)
            .filter_map(|w| (w[1] - w[0]).to_std().ok())
            .max()
    }

    /// The next `n` run times after `after`, the schedule read in time zone `tz`.
    pub fn next_runs(&self, after: DateTime<Utc>, tz: Tz, n: usize) -> Vec<DateTime<Tz>> {
        self.schedule
            .after(&after.with_timezone(&tz))
            .take(n)
            .collect()
    }
}

impl fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Settings hold resolved secrets, and literal ones an operator wrote inline:
        // show only the keys.
        let settings_keys = self.settings.keys();
        f.debug_struct("SourceConfig")
            .field("id", &self.id)
            .field("plugin", &self.plugin)
            .field("units", &self.units)
            .field("coverage", &self.coverage)
            .field("schedule", &self.schedule_text)
            .field("lookback_days", &self.lookback_days)
            .field("timeout", &self.timeout)
            .field("isolation", &self.isolation)
            .field("retries", &self.retries)
            .field("retry_backoff", &self.retry_backoff)
            .field("breaker_after", &self.breaker_after)
            .field("backfill_from", &self.backfill_from)
            .field("enabled", &self.enabled)
            .field("indicators", &self.indicators)
            .field("settings_keys", &settings_keys)
            .finish()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("path", &self.path)
            .field("daemon", &self.daemon)
            .field("units", &self.units)
            .field("indicators", &self.indicators)
            .field("targets", &self.targets)
            .field("sources", &self.sources)
            .field("reports", &self.reports)
            .field("metrics", &self.metrics)
            .field("secrets", &self.secrets)
            .finish()
    }
}

impl Config {
    pub const DEFAULT_LISTEN: &str = "127.0.0.1:9470";
    pub const DEFAULT_TIMEZONE: Tz = chrono_tz::Asia::Shanghai;
    pub const DEFAULT_DATA_DIR: &str = "data";
    /// The default plugin directory of a tallyd at `/usr/bin/tallyd`, as the
    /// package installs it: what [`Config::parse`], which knows no executable,
    /// gives `plugin_dirs` when the file does not set it. [`Config::load`]
    /// uses [`Config::default_plugin_dir`] of the running executable instead.
    pub const DEFAULT_PLUGIN_DIR: &str = "/usr/lib/tally/plugins";
    pub const DEFAULT_MAX_CONCURRENT_RUNS: usize = 4;
    pub const DEFAULT_LOOKBACK_DAYS: u32 = 3;
    /// Enough for a plugin and its HTTP client; a runaway allocation stops there.
    pub const DEFAULT_MEMORY_LIMIT_MB: u64 = 2048;
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
    /// `[store] lease`: a dead replica's runs are run again by another
    /// after at most this long.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
    /// The shortest `[store] lease`: renewed every third of it, a lease
    /// shorter than a few seconds would expire under an ordinary stall.
    pub const MIN_LEASE: Duration = Duration::from_secs(3);
    pub const DEFAULT_RETRIES: u32 = 2;
    pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(5);
    pub const DEFAULT_BREAKER_AFTER: u32 = 3;
    pub const DEFAULT_HTTP_PER_HOST_CONCURRENCY: usize = 4;
    /// The first day of each quarter at 10:00: WeChat's figures of the
    /// quarter's last day are final only from 08:00 that morning, so the
    /// collections after it have had time to run.
    pub const DEFAULT_REPORT_SCHEDULE: &str = "0 10 1 1,4,7,10 *";

    /// Where plugins are looked for when `daemon.plugin_dirs` is not set, for
    /// a tallyd whose executable is in `exe_dir`: `lib/tally/plugins` in the
    /// parent of `exe_dir`, so that a package's or an unpacked tarball's tree
    /// finds its own plugins wherever it was put.
    ///
    /// ```
    /// use std::path::Path;
    /// use tally_config::Config;
    /// assert_eq!(
    ///     Config::default_plugin_dir(Path::new("/opt/tally/bin")),
    ///     Path::new("/opt/tally/lib/tally/plugins")
    /// );
    /// assert_eq!(
    ///     Config::default_plugin_dir(Path::new("/usr/bin")),
    ///     Path::new(Config::DEFAULT_PLUGIN_DIR)
    /// );
    /// ```
    pub fn default_plugin_dir(exe_dir: &Path) -> PathBuf {
        exe_dir
            .parent()
            .unwrap_or(exe_dir)
            .join("lib/tally/plugins")
    }

    /// The unit tree of the configuration. The parser already checked ids and
    /// parents, so an error here is reported at the units list.
    pub fn unit_tree(&self) -> Result<tally_domain::UnitTree, ConfigError> {
        let defs = self
            .units
            .iter()
            .map(|u| tally_domain::UnitDef {
                id: u.id.clone(),
                name: u.name.clone(),
                headcount: u.headcount,
                aliases: u.aliases.clone(),
            })
            .collect();
        tally_domain::UnitTree::new(defs).map_err(|e| ConfigError::Invalid {
            location: self.location("units"),
            message: e.to_string(),
        })
    }

    /// Reads and validates a configuration file; `${env:...}` reads the process
    /// environment, and `plugin_dirs` defaults to [`Config::default_plugin_dir`]
    /// of the running executable.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read(path)?;
        Config::parse_with(&text, path, &process_env, false, &running_plugin_dir())
            .map(|(config, _)| config)
    }

    /// [`Config::load`] for `tallyd check`: a secret reference that cannot
    /// be resolved (a variable not set, a file not readable) does not stop
    /// the load. It is left in the configuration as written (a plugin then
    /// validates its settings with the reference text where the secret
    /// would be) and returned as a problem at its key, naming the variable
    /// or the file. Every other problem is an error as in [`Config::load`],
    /// and then the unresolved references are among its problems.
    pub fn load_deferring_secrets(path: &Path) -> Result<(Config, Vec<Problem>), ConfigError> {
        let text = read(path)?;
        Config::parse_with(&text, path, &process_env, true, &running_plugin_dir())
    }

    /// Only `daemon.plugin_dirs` of a configuration file (the default when
    /// it is not set), for `tallyd plugins --config`: the rest of the file
    /// is not validated and no secret is read.
    pub fn load_plugin_dirs(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
        let text = read(path)?;
        let (tree, syntax_errors) = toml::de::DeTable::parse_recoverable(&text);
        let keys = KeyIndex::build(path, &text, tree.get_ref());
        let toml_problem = |err: &toml::de::Error| Problem {
            location: keys.at_offset(&text, err.span().map_or(0, |s| s.start)),
            message: err.message().trim_end().to_owned(),
        };
        if !syntax_errors.is_empty() {
            return Err(ConfigError::from_problems(
                syntax_errors.iter().map(toml_problem).collect(),
            ));
        }
        // Only the one key: everything else is left unread, not refused.
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            daemon: Daemon,
        }
        #[derive(Deserialize, Default)]
        struct Daemon {
            plugin_dirs: Option<Vec<PathBuf>>,
        }
        let file = File::deserialize(toml::de::Deserializer::from(tree))
            .map_err(|e| ConfigError::from_problems(vec![toml_problem(&e)]))?;
        Ok(file
            .daemon
            .plugin_dirs
            .unwrap_or_else(|| vec![running_plugin_dir()]))
    }

    /// Validates configuration text. `path` names the file in messages and is the base
    /// of relative `${file:...}` paths; `env` answers `${env:NAME}`.
    pub fn parse(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Config::parse_with(
            text,
            path,
            env,
            false,
            Path::new(Config::DEFAULT_PLUGIN_DIR),
        )
        .map(|(config, _)| config)
    }

    /// [`Config::parse`] as [`Config::load_deferring_secrets`] reads a file.
    pub fn parse_deferring_secrets(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Config, Vec<Problem>), ConfigError> {
        Config::parse_with(text, path, env, true, Path::new(Config::DEFAULT_PLUGIN_DIR))
    }

    fn parse_with(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        defer_missing: bool,
        default_plugin_dir: &Path,
    ) -> Result<(Config, Vec<Problem>), ConfigError> {
        let (tree, syntax_errors) = toml::de::DeTable::parse_recoverable(text);
        let keys = KeyIndex::build(path, text, tree.get_ref());
        let toml_problem = |err: &toml::de::Error| Problem {
            location: keys.at_offset(text, err.span().map_or(0, |s| s.start)),
            // Only the message: toml's `Display` quotes the offending line, which may
            // hold a secret written inline.
            message: err.message().trim_end().to_owned(),
        };
        if !syntax_errors.is_empty() {
            return Err(ConfigError::from_problems(
                syntax_errors.iter().map(toml_problem).collect(),
            ));
        }
        let raw = raw::Config::deserialize(toml::de::Deserializer::from(tree))
            .map_err(|e| ConfigError::from_problems(vec![toml_problem(&e)]))?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        let mut checker = Checker {
            keys: &keys,
            default_plugin_dir,
            problems: Vec::new(),
            unresolved: Vec::new(),
            resolver: Resolver {
                env,
                base_dir,
                resolved: Vec::new(),
                defer_missing,
                unresolved: Vec::new(),
            },
        };
        let config = checker.config(raw, path);
        if !checker.problems.is_empty() {
            let mut problems = checker.problems;
            problems.append(&mut checker.unresolved);
            return Err(ConfigError::from_problems(problems));
        }
        let secrets = Redactor::new(checker.resolved_secrets(&config));
        let mut unresolved = checker.unresolved;
        unresolved.sort_by_key(|p| (p.location.line, p.location.column));
        Ok((
            Config {
                secrets,
                keys: keys.without_spans(),
                ..config
            },
            unresolved,
        ))
    }

    /// Every secret value of this configuration, to scrub plugin errors and logs.
    pub fn secrets(&self) -> &Redactor {
        &self.secrets
    }

    /// Where report files are written: `reports.dir`, or `data_dir/reports`.
    pub fn reports_dir(&self) -> PathBuf {
        self.reports
            .dir
            .clone()
            .unwrap_or_else(|| self.daemon.data_dir.join("reports"))
    }

    pub fn unit(&self, id: &str) -> Option<&UnitConfig> {
        self.units.iter().find(|u| u.id == id)
    }

    pub fn indicator(&self, id: &str) -> Option<&IndicatorConfig> {
        self.indicators.iter().find(|i| i.id == id)
    }

    pub fn source(&self, id: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.id == id)
    }

    /// Where a key path is in the file, e.g. `sources[2].settings.mapping[0].path`.
    /// A key not in the file is placed at its nearest ancestor that is.
    pub fn location(&self, key: &str) -> Location {
        self.keys.at(key)
    }

    /// Where source number `source_idx` (an index into `sources`) is: its `[[sources]]` header.
    pub fn source_location(&self, source_idx: usize) -> Location {
        self.keys.at(&format!("sources[{source_idx}]"))
    }

    /// Where a key inside a source's settings is, given as a JSON Pointer into
    /// `settings` (`/mapping/0/path`, as plugins report settings errors): key path
    /// `sources[2].settings.mapping[0].path`. An empty pointer names `settings` itself.
    pub fn settings_location(&self, source_idx: usize, pointer: &str) -> Location {
        let mut key = format!("sources[{source_idx}].settings");
        let settings = self.sources.get(source_idx).map(|s| s.settings.value());
        let mut value = settings.as_ref();
        for token in pointer.split('/').skip(1) {
            let token = token.replace("~1", "/").replace("~0", "~");
            match value {
                Some(serde_json::Value::Array(items)) if token.parse::<usize>().is_ok() => {
                    value = token.parse::<usize>().ok().and_then(|i| items.get(i));
                    key = format!("{key}[{token}]");
                }
                Some(serde_json::Value::Object(map)) => {
                    value = map.get(&token);
                    key = join_key(&key, &token);
                }
                _ => {
                    value = None;
                    key = join_key(&key, &token);
                }
            }
        }
        self.keys.at(&key)
    }

    /// Declare once: adds to `indicators` every indicator an enabled source
    /// stores under its plugin's own id (not mapped by
    /// `[sources.indicators]`) that `[[indicators]]` lacks and that the
    /// plugin declares in its `describe()`, with the plugin's name, kind and
    /// unit. `emits` maps a source id to the ids its plugin emits,
    /// `described` a plugin name to its declarations. A configured
    /// indicator always wins: declaring it in the file renames it, sets its
    /// unit, and lets targets name it. Returns the ids added, in file order
    /// of their first source. Two plugins declaring one id differently is
    /// left to [`Config::check_emits`] (the first one's declaration is used).
    pub fn adopt_plugin_indicators(
        &mut self,
        emits: &HashMap<String, Vec<String>>,
        described: &HashMap<String, Vec<tally_plugin::IndicatorDecl>>,
    ) -> Vec<String> {
        let mut added = Vec::new();
        for source in self.sources.iter().filter(|s| s.enabled) {
            let (Some(emitted), Some(decls)) =
                (emits.get(&source.id), described.get(&source.plugin))
            else {
                continue;
            };
            for id in emitted {
                if source.indicators.contains_key(id) || self.indicators.iter().any(|i| &i.id == id)
                {
                    continue;
                }
                let Some(decl) = decls.iter().find(|d| &d.id == id) else {
                    continue;
                };
                let kind = match decl.kind {
                    tally_plugin::Kind::Count => Kind::Count,
                    tally_plugin::Kind::Level => Kind::Level,
                    tally_plugin::Kind::Distinct => Kind::Distinct,
                };
                // A declared indicator has no `min`/`max` in the file: the
                // kind's default range, as for a configured one without them.
                self.indicators.push(IndicatorConfig {
                    id: decl.id.clone(),
                    name: decl.name.clone(),
                    kind,
                    unit: decl.unit.clone(),
                    accumulates: None,
                    per_capita: false,
                    min: kind.default_min(),
                    max: MAX_VALUE,
                    declared_by: Some(source.plugin.clone()),
                });
                added.push(decl.id.clone());
            }
        }
        added
    }

    /// The check that needs the loaded plugins. `emits` maps a source id to the
    /// indicator ids its plugin says it emits. Each source's indicator
    /// mapping must name only ids its plugin emits and must not store two of
    /// them under one id; every id a source stores (mapped, see
    /// [`SourceConfig::mapped_emits`]) must be declared, and every declared
    /// indicator must be stored by an enabled source. Source ids not in
    /// `emits` are ignored.
    pub fn check_emits(&self, emits: &HashMap<String, Vec<String>>) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let declared: HashSet<&str> = self.indicators.iter().map(|i| i.id.as_str()).collect();
        let mut stored: HashMap<&str, Vec<String>> = HashMap::new();
        for (idx, source) in self.sources.iter().enumerate() {
            let Some(indicators) = emits.get(&source.id) else {
                continue;
            };
            for (emitted, mapped) in &source.indicators {
                let at = self.location(&join_key(&format!("sources[{idx}].indicators"), emitted));
                if !indicators.contains(emitted) {
                    problems.push(Problem {
                        location: at,
                        message: format!(
                            "plugin {:?} of source {:?} does not emit indicator {emitted:?}; it emits {}",
                            source.plugin,
                            source.id,
                            if indicators.is_empty() {
                                "none".to_owned()
                            } else {
                                indicators.join(", ")
                            }
                        ),
                    });
                    continue;
                }
                let Some(mapped) = mapped else { continue };
                let others: Vec<&str> = indicators
                    .iter()
                    .filter(|other| *other != emitted)
                    .filter(|other| source.map_indicator(other) == Some(mapped.as_str()))
                    .map(String::as_str)
                    .collect();
                if !others.is_empty() {
                    problems.push(Problem {
                        location: at,
                        message: format!(
                            "indicator {mapped:?} would receive both {emitted:?} and {} of plugin {:?}: map each emitted indicator to its own id, or drop one with false",
                            others.iter().map(|o| format!("{o:?}")).collect::<Vec<_>>().join(" and "),
                            source.plugin
                        ),
                    });
                }
            }
            let mapped = source.mapped_emits(indicators);
            for indicator in &mapped {
                if !declared.contains(indicator.as_str()) {
                    let message = if indicators.contains(indicator) {
                        format!(
                            "plugin {:?} of source {:?} emits indicator {indicator:?}, which neither its describe() nor [[indicators]] declares (declare it, or map it in [sources.indicators] to a declared id or to false)",
                            source.plugin, source.id
                        )
                    } else {
                        // A mapped id: the parse already named it at its key.
                        continue;
                    };
                    problems.push(Problem {
                        location: self.location(&format!("sources[{idx}].plugin")),
                        message,
                    });
                }
            }
            stored.insert(source.id.as_str(), mapped);
        }
        for (idx, indicator) in self.indicators.iter().enumerate() {
            let emitted_by = |enabled: bool| -> Vec<&str> {
                self.sources
                    .iter()
                    .filter(|s| s.enabled == enabled)
                    .filter(|s| {
                        stored
                            .get(s.id.as_str())
                            .is_some_and(|e| e.contains(&indicator.id))
                    })
                    .map(|s| s.id.as_str())
                    .collect()
            };
            if emitted_by(true).is_empty() {
                let disabled = emitted_by(false);
                let mut message = format!("no source emits indicator {:?}", indicator.id);
                if !disabled.is_empty() {
                    message.push_str(&format!(
                        " (only disabled sources do: {})",
                        disabled.join(", ")
                    ));
                }
                problems.push(Problem {
                    location: self.location(&format!("indicators[{idx}].id")),
                    message,
                });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::from_problems(problems))
        }
    }
}

/// The password of a `postgresql://user:password@host/...` URL, as written
/// (percent-encoded, as it also travels in messages that quote the URL).
fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let userinfo = authority.rsplit_once('@')?.0;
    userinfo.split_once(':').map(|(_, password)| password)
}

/// The semantic checks: turns the raw, deserialized file into a [`Config`],
/// collecting problems instead of stopping at the first.
struct Checker<'a> {
    keys: &'a KeyIndex,
    /// What `plugin_dirs` is when the file does not set it.
    default_plugin_dir: &'a Path,
    problems: Vec<Problem>,
    /// Secret references left unresolved (only when the resolver defers them).
    unresolved: Vec<Problem>,
    resolver: Resolver<'a>,
}

impl Checker<'_> {
    /// Resolves the secret references in the value at `key`; one that is
    /// deferred becomes an entry of `unresolved` at that key.
    fn resolve(&mut self, key: &str, text: &str) -> Result<String, String> {
        let resolved = self.resolver.resolve(text);
        for message in std::mem::take(&mut self.resolver.unresolved) {
            self.unresolved.push(Problem {
                location: self.keys.at(key),
                message,
            });
        }
        resolved
    }

    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            location: self.keys.at(key),
            message: message.into(),
        });
    }

    fn resolved_secrets(&self, config: &Config) -> Vec<String> {
        let mut secrets = self.resolver.resolved.clone();
        // The database's password is a secret even when written inline.
        secrets.extend(
            config
                .store
                .as_ref()
                .and_then(|s| url_password(s.url.expose()))
                .map(str::to_owned),
        );
        // The token is a secret even when written inline.
        secrets.extend(
            config
                .daemon
                .api_token
                .as_ref()
                .map(|t| t.expose().to_owned()),
        );
        secrets
    }

    fn config(&mut self, raw: raw::Config, path: &Path) -> Config {
        let daemon = self.daemon(raw.daemon);
        let units = self.units(raw.units);
        let unit_ids: HashSet<String> = units.iter().map(|u| u.id.clone()).collect();
        let indicators = self.indicators(raw.indicators);
        let indicator_ids: HashSet<String> = indicators.iter().map(|i| i.id.clone()).collect();
        let accumulating: HashSet<String> = indicators
            .iter()
            .filter(|i| i.accumulates.is_some())
            .map(|i| i.id.clone())
            .collect();
        let targets = self.targets(raw.targets, &indicator_ids, &accumulating, &unit_ids);
        let sources = self.sources(raw.sources, &unit_ids, &indicator_ids);
        let reports = self.reports(raw.reports);
        let store = raw.store.and_then(|raw| self.store(raw));
        let metrics = self.metrics(raw.metrics, &units, &indicators, &targets);
        Config {
            daemon,
            units,
            indicators,
            targets,
            sources,
            reports,
            store,
            metrics,
            path: path.to_owned(),
            secrets: Redactor::default(),
            keys: KeyIndex::default(),
        }
    }

    fn store(&mut self, raw: raw::Store) -> Option<StoreConfig> {
        let url = match self.resolve("store.url", &raw.url) {
            Ok(url) => url,
            Err(message) => {
                self.problem("store.url", message);
                return None;
            }
        };
        if !url.starts_with("postgresql://") && !url.starts_with("postgres://") {
            // Not the value: it may hold a password.
            self.problem(
                "store.url",
                "expected a PostgreSQL URL, postgresql://USER@HOST:PORT/DATABASE \
                 (the password through ${env:NAME} or ${file:PATH}); \
                 leave [store] out for the embedded SQLite store",
            );
            return None;
        }
        if let Some(password) = url_password(&url)
            && password.chars().count() < Redactor::MIN_LEN
        {
            self.problem(
                "store.url",
                format!(
                    "the password is shorter than {} characters: too short to be redacted",
                    Redactor::MIN_LEN
                ),
            );
            return None;
        }
        let lease = match &raw.lease {
            None => Config::DEFAULT_LEASE,
            Some(text) => match parse_duration(text) {
                Ok(lease) if lease >= Config::MIN_LEASE => lease,
                Ok(_) => {
                    self.problem(
                        "store.lease",
                        format!(
                            "lease {text:?} is too short: at least {}s, since a replica renews it every third of it",
                            Config::MIN_LEASE.as_secs()
                        ),
                    );
                    Config::DEFAULT_LEASE
                }
                Err(message) => {
                    self.problem(
                        "store.lease",
                        format!("invalid duration {text:?}: {message}"),
                    );
                    Config::DEFAULT_LEASE
                }
            },
        };
        Some(StoreConfig {
            url: Secret::new(url),
            lease,
        })
    }

    fn daemon(&mut self, raw: raw::Daemon) -> DaemonConfig {
        let listen_text = raw
            .listen
            .unwrap_or_else(|| Config::DEFAULT_LISTEN.to_owned());
        let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|e| {
            self.problem(
                "daemon.listen",
                format!(
                    "invalid address {listen_text:?}: {e} (expected IP:PORT, e.g. 127.0.0.1:9470)"
                ),
            );
            Config::DEFAULT_LISTEN
                .parse()
                .expect("default address parses")
        });
        let timezone = match raw.timezone {
            None => Config::DEFAULT_TIMEZONE,
            Some(name) => name.parse::<Tz>().unwrap_or_else(|_| {
                self.problem(
                    "daemon.timezone",
                    format!("unknown time zone {name:?} (expected an IANA name such as \"Asia/Shanghai\")"),
                );
                Config::DEFAULT_TIMEZONE
            }),
        };
        let api_token =
            raw.api_token
                .and_then(|text| match self.resolve("daemon.api_token", &text) {
                    Ok(value) if value.is_empty() => {
                        self.problem("daemon.api_token", "the token is empty");
                        None
                    }
                    Ok(value) if value.chars().count() < Redactor::MIN_LEN => {
                        self.problem(
                            "daemon.api_token",
                            format!(
                                "the token is shorter than {} characters: guessed at once, \
                                 and too short to be redacted",
                                Redactor::MIN_LEN
                            ),
                        );
                        None
                    }
                    Ok(value) => Some(Secret::new(value)),
                    Err(message) => {
                        self.problem("daemon.api_token", message);
                        None
                    }
                });
        if !listen.ip().is_loopback() && api_token.is_none() {
            self.problem(
                "daemon.listen",
                format!("listening on {listen} requires daemon.api_token"),
            );
        }
        let max_concurrent_runs = raw
            .max_concurrent_runs
            .unwrap_or(Config::DEFAULT_MAX_CONCURRENT_RUNS);
        if max_concurrent_runs == 0 {
            self.problem("daemon.max_concurrent_runs", "must be at least 1");
        }
        let http_per_host_concurrency = raw
            .http_per_host_concurrency
            .unwrap_or(Config::DEFAULT_HTTP_PER_HOST_CONCURRENCY);
        if http_per_host_concurrency == 0 {
            self.problem("daemon.http_per_host_concurrency", "must be at least 1");
        }
        let http_per_host_rate = raw.http_per_host_rate.filter(|rate| {
            let ok = rate.is_finite() && *rate > 0.0;
            if !ok {
                self.problem(
                    "daemon.http_per_host_rate",
                    format!("must be a number of requests per second above 0, found {rate}"),
                );
            }
            ok
        });
        let hosts = raw
            .hosts
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, host)| match host_entry(&host) {
                Ok(host) => Some(host),
                Err(why) => {
                    self.problem(
                        &format!("daemon.hosts[{i}]"),
                        format!(
                            "{host:?} {why} (expected a host name or address as browsers send it \
                             in Host, optionally with :PORT, e.g. \"tally.example.gov.cn\" or \
                             \"tally.example.gov.cn:9470\")"
                        ),
                    );
                    None
                }
            })
            .collect();
        DaemonConfig {
            listen,
            timezone,
            data_dir: raw
                .data_dir
                .unwrap_or_else(|| Config::DEFAULT_DATA_DIR.into()),
            plugin_dirs: raw
                .plugin_dirs
                .unwrap_or_else(|| vec![self.default_plugin_dir.to_owned()]),
            api_token,
            max_concurrent_runs,
            http_per_host_concurrency: http_per_host_concurrency.max(1),
            http_per_host_rate,
            hosts,
        }
    }

    fn reports(&mut self, raw: raw::Reports) -> ReportsConfig {
        let schedule_text = raw
            .schedule
            .unwrap_or_else(|| Config::DEFAULT_REPORT_SCHEDULE.to_owned());
        let schedule = schedule::parse(&schedule_text).unwrap_or_else(|message| {
            self.problem(
                "reports.schedule",
                format!("invalid cron expression {schedule_text:?}: {message}"),
            );
            schedule::parse(Config::DEFAULT_REPORT_SCHEDULE).expect("the default schedule parses")
        });
        let mut formats = Vec::new();
        for format in raw
            .formats
            .unwrap_or_else(|| vec![ReportFormat::Xlsx, ReportFormat::Csv])
        {
            if !formats.contains(&format) {
                formats.push(format);
            }
        }
        if formats.is_empty() {
            self.problem(
                "reports.formats",
                format!(
                    "the list of formats is empty; accepted: {} (or set enabled = false)",
                    ReportFormat::names()
                ),
            );
        }
        let narrative_template = raw.narrative_template.and_then(|path| {
            NarrativeTemplate::load(&path)
                .map_err(|message| self.problem("reports.narrative_template", message))
                .ok()
        });
        ReportsConfig {
            enabled: raw.enabled.unwrap_or(true),
            schedule,
            schedule_text,
            formats,
            dir: raw.dir,
            write_on_start: raw.write_on_start.unwrap_or(false),
            narrative_template,
        }
    }

    fn units(&mut self, raw: Vec<raw::Unit>) -> Vec<UnitConfig> {
        // First index of each id, and the unit each name or alias belongs to.
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, unit) in raw.iter().enumerate() {
            let key = format!("units[{i}].id");
            if let Err(message) = check_unit_id(&unit.id) {
                self.problem(&key, message);
            }
            if let Some(&j) = first.get(unit.id.as_str()) {
                let line = self.keys.at(&format!("units[{j}].id")).line;
                self.problem(
                    &key,
                    format!(
                        "duplicate unit id {:?}, first defined at units[{j}].id (line {line})",
                        unit.id
                    ),
                );
            } else {
                first.insert(&unit.id, i);
            }
            if unit.name.trim().is_empty() {
                self.problem(&format!("units[{i}].name"), "the name is empty");
            }
        }
        // Ids are paths, so the parent of `a/b` is `a` by construction: a unit can
        // only name an ancestor that is strictly shorter, and no cycle can be written.
        // What can go wrong is a missing parent.
        for (i, unit) in raw.iter().enumerate() {
            if let Some((parent, _)) = unit.id.rsplit_once('/')
                && !first.contains_key(parent)
            {
                self.problem(
                    &format!("units[{i}].id"),
                    format!("unknown parent unit {parent:?} of unit {:?}", unit.id),
                );
            }
        }
        // Other systems name units by name or alias (an organisation name in an
        // export), so an alias must lead to one unit: it may not be another unit's
        // alias or name. Two units may share a name (many bureaus have an 办公室);
        // such a name simply cannot be used as an alias.
        let mut owner: HashMap<&str, (usize, String)> = HashMap::new();
        for (i, unit) in raw.iter().enumerate() {
            owner
                .entry(&unit.name)
                .or_insert((i, format!("units[{i}].name")));
        }
        for (i, unit) in raw.iter().enumerate() {
            for (a, alias) in unit.aliases.iter().enumerate() {
                let key = format!("units[{i}].aliases[{a}]");
                match owner.get(alias.as_str()) {
                    Some((j, other)) if *j != i => {
                        let line = self.keys.at(other).line;
                        let message = format!(
                            "alias {alias:?} of unit {:?} is already used by unit {:?} at {other} (line {line})",
                            unit.id, raw[*j].id
                        );
                        self.problem(&key, message);
                    }
                    Some(_) => {}
                    None => {
                        owner.insert(alias, (i, key));
                    }
                }
            }
        }
        raw.into_iter()
            .map(|u| UnitConfig {
                id: u.id,
                name: u.name,
                headcount: u.headcount,
                aliases: u.aliases,
            })
            .collect()
    }

    fn indicators(&mut self, raw: Vec<raw::Indicator>) -> Vec<IndicatorConfig> {
        let mut first: HashMap<String, usize> = HashMap::new();
        for (i, indicator) in raw.iter().enumerate() {
            let key = format!("indicators[{i}].id");
            if !is_indicator_id(&indicator.id) {
                self.problem(
                    &key,
                    format!(
                        "invalid indicator id {:?}: expected [a-z][a-z0-9_]*",
                        indicator.id
                    ),
                );
            }
            if let Some(&j) = first.get(&indicator.id) {
                let line = self.keys.at(&format!("indicators[{j}].id")).line;
                self.problem(
                    &key,
                    format!(
                        "duplicate indicator id {:?}, first defined at indicators[{j}].id (line {line})",
                        indicator.id
                    ),
                );
            } else {
                first.insert(indicator.id.clone(), i);
            }
            if indicator.name.trim().is_empty() {
                self.problem(&format!("indicators[{i}].name"), "the name is empty");
            }
            // Only a level can be a running total: a count adds its days up,
            // which would count the year again every day.
            if indicator.accumulates.is_some() && indicator.kind != Kind::Level {
                self.problem(
                    &format!("indicators[{i}].accumulates"),
                    format!(
                        "only a \"level\" indicator can accumulate, and {:?} is kind {:?}",
                        indicator.id,
                        indicator.kind.as_str()
                    ),
                );
            }
            // Past MAX_VALUE a sum of values could overflow to infinity.
            for (key, bound) in [("min", indicator.min), ("max", indicator.max)] {
                if let Some(v) = bound
                    && !(v.is_finite() && v.abs() <= MAX_VALUE)
                {
                    self.problem(
                        &format!("indicators[{i}].{key}"),
                        format!(
                            "must be a number from -{MAX_VALUE:e} to {MAX_VALUE:e}, found {}",
                            show_value(v)
                        ),
                    );
                }
            }
            let min = indicator.min.unwrap_or(indicator.kind.default_min());
            if let Some(max) = indicator.max
                && max < min
            {
                self.problem(
                    &format!("indicators[{i}].max"),
                    format!(
                        "{} is below the indicator's min {}",
                        show_value(max),
                        show_value(min)
                    ),
                );
            }
        }
        raw.into_iter()
            .map(|i| IndicatorConfig {
                id: i.id,
                name: i.name,
                kind: i.kind,
                unit: i.unit,
                accumulates: i.accumulates,
                per_capita: i.per_capita.unwrap_or(false),
                min: i.min.unwrap_or(i.kind.default_min()),
                max: i.max.unwrap_or(MAX_VALUE),
                declared_by: None,
            })
            .collect()
    }

    fn targets(
        &mut self,
        raw: Vec<raw::Target>,
        indicators: &HashSet<String>,
        accumulating: &HashSet<String>,
        units: &HashSet<String>,
    ) -> Vec<TargetConfig> {
        for (i, target) in raw.iter().enumerate() {
            if !indicators.contains(&target.indicator) {
                self.problem(
                    &format!("targets[{i}].indicator"),
                    format!("unknown indicator {:?}", target.indicator),
                );
            }
            // A total since 1 January has no monthly or quarterly minimum of
            // its own: "30 points a month" of it would mean 30 by the end of
            // January, 60 by February's... which is a yearly 360 pro-rated.
            if accumulating.contains(&target.indicator) && target.period != TargetPeriod::Year {
                self.problem(
                    &format!("targets[{i}].period"),
                    format!(
                        "indicator {:?} accumulates over the year, so its target must be yearly (period = \"year\"), found {:?}; it is compared at each period's end with the yearly minimum pro-rated to that day",
                        target.indicator,
                        target.period.as_str()
                    ),
                );
            }
            if !(target.min.is_finite() && target.min > 0.0) {
                self.problem(
                    &format!("targets[{i}].min"),
                    format!("must be a number greater than 0, found {}", target.min),
                );
            }
            for (u, unit) in target.units.iter().flatten().enumerate() {
                if !units.contains(unit) {
                    self.problem(
                        &format!("targets[{i}].units[{u}]"),
                        format!("unknown unit {unit:?}"),
                    );
                }
            }
        }
        raw.into_iter()
            .map(|t| TargetConfig {
                indicator: t.indicator,
                per: t.per,
                period: t.period,
                min: t.min,
                prorate: t.prorate.unwrap_or(true),
                units: t.units,
            })
            .collect()
    }

    fn sources(
        &mut self,
        raw: Vec<raw::Source>,
        units: &HashSet<String>,
        indicators: &HashSet<String>,
    ) -> Vec<SourceConfig> {
        let mut first: HashMap<String, usize> = HashMap::new();
        let mut sources = Vec::with_capacity(raw.len());
        let mut parsed: HashMap<String, Arc<cron::Schedule>> = HashMap::new();
        for (i, source) in raw.into_iter().enumerate() {
            let key = |field: &str| format!("sources[{i}].{field}");
            if !is_source_id(&source.id) {
                self.problem(
                    &key("id"),
                    format!(
                        "invalid source id {:?}: expected [a-z0-9][a-z0-9_-]*",
                        source.id
                    ),
                );
            }
            if let Some(&j) = first.get(&source.id) {
                let line = self.keys.at(&format!("sources[{j}].id")).line;
                self.problem(
                    &key("id"),
                    format!(
                        "duplicate source id {:?}, first defined at sources[{j}].id (line {line})",
                        source.id
                    ),
                );
            } else {
                first.insert(source.id.clone(), i);
            }
            if source.plugin.trim().is_empty() {
                self.problem(&key("plugin"), "the plugin name is empty");
            }
            // `units = [...]` expects whole subtrees to report (a form all
            // units fill in); `unit = "..."` that one unit (its own
            // account); `coverage` says otherwise where written.
            let coverage = source.coverage.unwrap_or(if source.units.is_some() {
                Coverage::Subtrees
            } else {
                Coverage::Listed
            });
            let source_units = match (source.unit, source.units) {
                (Some(unit), None) => {
                    if !units.contains(&unit) {
                        self.problem(&key("unit"), format!("unknown unit {unit:?}"));
                    }
                    vec![unit]
                }
                (None, Some(list)) => {
                    if list.is_empty() {
                        self.problem(&key("units"), "the list of units is empty");
                    }
                    for (u, unit) in list.iter().enumerate() {
                        if !units.contains(unit) {
                            self.problem(
                                &format!("sources[{i}].units[{u}]"),
                                format!("unknown unit {unit:?}"),
                            );
                        } else if list[..u].contains(unit) {
                            self.problem(
                                &format!("sources[{i}].units[{u}]"),
                                format!("unit {unit:?} is listed twice"),
                            );
                        }
                    }
                    list
                }
                (Some(_), Some(_)) => {
                    self.problem(&key("units"), "set either `unit` or `units`, not both");
                    Vec::new()
                }
                (None, None) => {
                    self.problem(
                        &format!("sources[{i}]"),
                        format!(
                            "source {:?} needs `unit = \"ID\"` or `units = [\"ID\", ...]`",
                            source.id
                        ),
                    );
                    Vec::new()
                }
            };
            let mut mapping = BTreeMap::new();
            for (emitted, value) in source.indicators.unwrap_or_default() {
                let at = join_key(&key("indicators"), &emitted);
                match value {
                    toml::Value::String(id) => {
                        if !indicators.contains(&id) {
                            let mut declared: Vec<&str> =
                                indicators.iter().map(String::as_str).collect();
                            declared.sort_unstable();
                            self.problem(
                                &at,
                                format!(
                                    "unknown indicator {id:?}: map {emitted:?} to an id declared in [[indicators]] ({}), or to false to drop it",
                                    if declared.is_empty() {
                                        "none declared".to_owned()
                                    } else {
                                        declared.join(", ")
                                    }
                                ),
                            );
                        }
                        mapping.insert(emitted, Some(id));
                    }
                    toml::Value::Boolean(false) => {
                        mapping.insert(emitted, None);
                    }
                    other => self.problem(
                        &at,
                        format!(
                            "expected the id of a declared indicator (a string) or false to drop {emitted:?}, found {}",
                            match other {
                                toml::Value::Boolean(true) => "true".to_owned(),
                                other => other.type_str().to_owned(),
                            }
                        ),
                    ),
                }
            }
            let schedule = match parsed.get(&source.schedule) {
                Some(known) => Ok(known.clone()),
                None => schedule::parse(&source.schedule)
                    .map(|schedule| {
                        let schedule = Arc::new(schedule);
                        parsed.insert(source.schedule.clone(), schedule.clone());
                        schedule
                    })
                    .map_err(|message| {
                        self.problem(
                            &key("schedule"),
                            format!("invalid cron expression {:?}: {message}", source.schedule),
                        )
                    }),
            };
            let timeout = match &source.timeout {
                None => Config::DEFAULT_TIMEOUT,
                Some(text) => parse_duration(text).unwrap_or_else(|message| {
                    self.problem(
                        &key("timeout"),
                        format!("invalid duration {text:?}: {message}"),
                    );
                    Config::DEFAULT_TIMEOUT
                }),
            };
            let retry_backoff = match &source.retry_backoff {
                None => Config::DEFAULT_RETRY_BACKOFF,
                Some(text) => parse_duration(text).unwrap_or_else(|message| {
                    self.problem(
                        &key("retry_backoff"),
                        format!("invalid duration {text:?}: {message}"),
                    );
                    Config::DEFAULT_RETRY_BACKOFF
                }),
            };
            let backfill_from = source.backfill_from.and_then(|value| {
                parse_date(&value)
                    .map_err(|message| self.problem(&key("backfill_from"), message))
                    .ok()
            });
            let settings = match source.settings {
                None => Settings::empty(),
                Some(table) => Settings::from_value(
                    &self.settings(&key("settings"), toml::Value::Table(table)),
                ),
            };
            if let Ok(schedule) = schedule {
                sources.push(SourceConfig {
                    id: source.id,
                    plugin: source.plugin,
                    units: source_units,
                    coverage,
                    schedule,
                    schedule_text: source.schedule,
                    lookback_days: source
                        .lookback_days
                        .unwrap_or(Config::DEFAULT_LOOKBACK_DAYS),
                    timeout,
                    backfill_from,
                    enabled: source.enabled.unwrap_or(true),
                    isolation: source.isolation.unwrap_or_default(),
                    memory_limit_mb: source
                        .memory_limit_mb
                        .unwrap_or(Config::DEFAULT_MEMORY_LIMIT_MB),
                    retries: source.retries.unwrap_or(Config::DEFAULT_RETRIES),
                    retry_backoff,
                    breaker_after: source
                        .breaker_after
                        .unwrap_or(Config::DEFAULT_BREAKER_AFTER),
                    indicators: mapping,
                    settings,
                });
            }
        }
        sources
    }

    /// Converts a source's settings to JSON, resolving secret references in strings.
    fn settings(&mut self, key: &str, value: toml::Value) -> serde_json::Value {
        use serde_json::Value as Json;
        match value {
            toml::Value::String(text) => match self.resolve(key, &text) {
                Ok(resolved) => Json::String(resolved),
                Err(message) => {
                    self.problem(key, message);
                    Json::Null
                }
            },
            toml::Value::Integer(n) => Json::from(n),
            toml::Value::Float(f) => serde_json::Number::from_f64(f)
                .map(Json::Number)
                .unwrap_or_else(|| {
                    self.problem(key, format!("{f} cannot be handed to a plugin as JSON"));
                    Json::Null
                }),
            toml::Value::Boolean(b) => Json::Bool(b),
            toml::Value::Datetime(dt) => Json::String(dt.to_string()),
            toml::Value::Array(items) => Json::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| self.settings(&format!("{key}[{i}]"), item))
                    .collect(),
            ),
            toml::Value::Table(table) => Json::Object(
                table
                    .into_iter()
                    .map(|(k, v)| {
                        let value = self.settings(&join_key(key, &k), v);
                        (k, value)
                    })
                    .collect(),
            ),
        }
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The one place the daemon reads its environment: `${env:NAME}` references.
#[allow(clippy::disallowed_methods)]
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The default plugin directory of the running tallyd (the one other process
/// lookup of loading). The kernel's path of the executable has its symlinks
/// resolved: a `/usr/local/bin/tallyd` linking to `/opt/tally/bin/tallyd`
/// finds `/opt/tally/lib/tally/plugins`.
fn running_plugin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Config::default_plugin_dir))
        .unwrap_or_else(|| Config::DEFAULT_PLUGIN_DIR.into())
}

/// A unit id: `[a-z0-9_-]+` segments joined by `/`.
fn check_unit_id(id: &str) -> Result<(), String> {
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    if id.split('/').all(segment_ok) {
        Ok(())
    } else {
        Err(format!(
            "invalid unit id {id:?}: expected [a-z0-9_-]+ segments joined by `/`, e.g. \"county/natres\""
        ))
    }
}

fn is_indicator_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn is_source_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A duration in `humantime`'s grammar, the one the exec plugin reads too:
/// numbers with units (`500ms`, `60s`, `5m`, `1h30m`, `1h 30m`, `1.5h`, `1d`),
/// longer than zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const EXPECTED: &str =
        "expected numbers with units ms, s, m, h or d, e.g. \"60s\", \"5m\", \"1h30m\", \"500ms\"";
    let duration =
        humantime::parse_duration(text.trim()).map_err(|e| format!("{EXPECTED} ({e})"))?;
    if duration.is_zero() {
        return Err("must be longer than 0".to_owned());
    }
    Ok(duration)
}

/// `backfill_from`: a TOML date (`2026-01-01`) or a string `"2026-01-01"`.
fn parse_date(value: &toml::Value) -> Result<NaiveDate, String> {
    let text = match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(dt) if dt.time.is_none() && dt.offset.is_none() => dt.to_string(),
        other => {
            return Err(format!(
                "expected a date YYYY-MM-DD, found {}",
                other.type_str()
            ));
        }
    };
    NaiveDate::parse_from_str(&text, "%Y-%m-%d")
        .map_err(|e| format!("invalid date {text:?}: {e} (expected YYYY-MM-DD)"))
}

/// The file as serde reads it: only shapes and types; everything else is checked above.
mod raw {
    use std::path::PathBuf;

    use serde::Deserialize;

    use super::{Per, TargetPeriod};
    use tally_domain::Kind;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Config {
        #[serde(default)]
        pub daemon: Daemon,
        #[serde(default)]
        pub units: Vec<Unit>,
        #[serde(default)]
        pub indicators: Vec<Indicator>,
        #[serde(default)]
        pub targets: Vec<Target>,
        #[serde(default)]
        pub sources: Vec<Source>,
        #[serde(default)]
        pub reports: Reports,
        pub store: Option<Store>,
        #[serde(default)]
        pub metrics: super::metrics::Raw,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Store {
        pub url: String,
        pub lease: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Reports {
        pub enabled: Option<bool>,
        pub schedule: Option<String>,
        pub formats: Option<Vec<super::ReportFormat>>,
        pub dir: Option<PathBuf>,
        pub write_on_start: Option<bool>,
        pub narrative_template: Option<PathBuf>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Daemon {
        pub listen: Option<String>,
        pub timezone: Option<String>,
        pub data_dir: Option<PathBuf>,
        pub plugin_dirs: Option<Vec<PathBuf>>,
        pub api_token: Option<String>,
        pub max_concurrent_runs: Option<usize>,
        pub http_per_host_concurrency: Option<usize>,
        pub http_per_host_rate: Option<f64>,
        pub hosts: Option<Vec<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Unit {
        pub id: String,
        pub name: String,
        pub headcount: Option<u32>,
        #[serde(default)]
        pub aliases: Vec<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Indicator {
        pub id: String,
        pub name: String,
        pub kind: Kind,
        pub unit: String,
        pub accumulates: Option<super::Accumulates>,
        pub per_capita: Option<bool>,
        pub min: Option<f64>,
        pub max: Option<f64>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Target {
        pub indicator: String,
        pub per: Per,
        pub period: TargetPeriod,
        pub min: f64,
        pub prorate: Option<bool>,
        pub units: Option<Vec<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Source {
        pub id: String,
        pub plugin: String,
        pub unit: Option<String>,
        pub units: Option<Vec<String>>,
        pub coverage: Option<super::Coverage>,
        pub schedule: String,
        pub lookback_days: Option<u32>,
        pub timeout: Option<String>,
        pub backfill_from: Option<toml::Value>,
        pub enabled: Option<bool>,
        pub isolation: Option<super::Isolation>,
        pub memory_limit_mb: Option<u64>,
        pub retries: Option<u32>,
        pub retry_backoff: Option<String>,
        pub breaker_after: Option<u32>,
        /// Emitted id → configured id (a string) or `false`; checked above.
        pub indicators: Option<toml::Table>,
        /// Anything: the plugin validates its own settings.
        pub settings: Option<toml::Table>,
    }
}

/// A report file format, as named in `[reports] formats` and `--format`.
/// The first four render the statistics table; `docx` and `narrative-md`
/// the 情况报告 in prose, from the template of `narrative_template`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    Json,
    Csv,
    Md,
    Xlsx,
    Docx,
    #[serde(rename = "narrative-md")]
    NarrativeMd,
}

impl ReportFormat {
    pub const ALL: [ReportFormat; 6] = [
        ReportFormat::Json,
        ReportFormat::Csv,
        ReportFormat::Md,
        ReportFormat::Xlsx,
        ReportFormat::Docx,
        ReportFormat::NarrativeMd,
    ];

    /// The name in `formats`, `--format` and `format=`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportFormat::Json => "json",
            ReportFormat::Csv => "csv",
            ReportFormat::Md => "md",
            ReportFormat::Xlsx => "xlsx",
            ReportFormat::Docx => "docx",
            ReportFormat::NarrativeMd => "narrative-md",
        }
    }

    /// `json, csv, md, xlsx, docx, narrative-md`: for error messages.
    pub fn names() -> String {
        ReportFormat::ALL.map(ReportFormat::as_str).join(", ")
    }

    pub fn from_name(name: &str) -> Option<ReportFormat> {
        ReportFormat::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// The end of a file name in this format, without the leading dot: the
    /// format's name, but `narrative.md` for the 情况报告 in Markdown, which
    /// must not be taken for the table's `md`.
    pub fn extension(self) -> &'static str {
        match self {
            ReportFormat::NarrativeMd => "narrative.md",
            other => other.as_str(),
        }
    }

    pub fn from_extension(ext: &str) -> Option<ReportFormat> {
        ReportFormat::ALL.into_iter().find(|f| f.extension() == ext)
    }

    /// A file name split into its stem and format: `2026-Q3.narrative.md` is
    /// (`2026-Q3`, `NarrativeMd`), `2026-Q3.md` (`2026-Q3`, `Md`); `None`
    /// when no format's extension ends it.
    pub fn split_file_name(name: &str) -> Option<(&str, ReportFormat)> {
        let mut formats = ReportFormat::ALL;
        // The longest extension first: `narrative.md` before `md`.
        formats.sort_by_key(|f| std::cmp::Reverse(f.extension().len()));
        formats.into_iter().find_map(|f| {
            let stem = name.strip_suffix(f.extension())?.strip_suffix('.')?;
            (!stem.is_empty()).then_some((stem, f))
        })
    }

    /// The HTTP content type of a file in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            ReportFormat::Json => "application/json",
            ReportFormat::Csv => "text/csv; charset=utf-8",
            ReportFormat::Md | ReportFormat::NarrativeMd => "text/markdown; charset=utf-8",
            ReportFormat::Xlsx => {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            }
            ReportFormat::Docx => {
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            }
        }
    }
}

/// A `daemon.hosts` entry in lower case, or why it is not one: a DNS name
/// (letters, digits, `-`, `.`), an IPv4 address or a bracketed IPv6 one,
/// optionally with `:PORT`.
fn host_entry(text: &str) -> Result<String, &'static str> {
    let host = text.trim().trim_end_matches('.').to_ascii_lowercase();
    if host.contains("://") || host.contains('/') {
        return Err("is a URL, not a host");
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port))
            if !name.ends_with(':') && (!name.contains(':') || name.ends_with(']')) =>
        {
            (name, Some(port))
        }
        _ => (host.as_str(), None),
    };
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err("has an invalid port");
    }
    let valid = if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    if valid {
        Ok(host)
    } else {
        Err("is not a host name")
    }
}
