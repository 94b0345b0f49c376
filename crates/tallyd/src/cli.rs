//! The command line of the README. The only module that prints to stdout.
#![allow(clippy::print_stdout)]

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Parser, Subcommand, ValueEnum};

use tally_config::{Config, ConfigError};
use tally_daemon::daemon::{self, Daemon, StartError};
use tally_daemon::engine::{self, Engine, Trigger};
use tally_daemon::summary::{self, SummaryRequest};
use tally_domain::clock::{Clock, SystemClock};
use tally_domain::period::Period;
use tally_host::PluginRegistry;

#[derive(Parser, Debug)]
#[command(
    name = "tallyd",
    version,
    about = "Collects activity counts for the units of an organisation, rolls them up and serves them as metrics and reports"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The configuration file of the installed layout (the package puts a
/// starting one there), read when `--config` and `TALLY_CONFIG` are not given.
pub const DEFAULT_CONFIG: &str = "/etc/tally/tally.toml";

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, env = "TALLY_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate the configuration, load every plugin, print what would run.
    Check {
        #[arg(long, env = "TALLY_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Run one source now, or backfill a range of days.
    Collect {
        #[arg(long, env = "TALLY_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        source: String,
        /// First day to collect (YYYY-MM-DD); needs --to.
        #[arg(long, requires = "to")]
        from: Option<NaiveDate>,
        /// Last day to collect (YYYY-MM-DD); needs --from.
        #[arg(long, requires = "from")]
        to: Option<NaiveDate>,
        /// Print the observations as JSON lines and store nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write the statistics table for a period.
    Report {
        #[arg(long, env = "TALLY_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// 2026-11-27, 2026-W48, 2026-11, 2026-Q4, 2026 or 2026-10-01..2026-11-15.
        #[arg(long)]
        period: String,
        #[arg(long)]
        unit: Option<String>,
        /// Default json; with --explain, a plain table unless json is asked.
        #[arg(long, value_enum)]
        format: Option<ReportFormat>,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Instead of the table, list the observations behind INDICATOR of
        /// --unit (its whole subtree) with their source, entity, day and run.
        #[arg(long, value_name = "INDICATOR", requires = "unit")]
        explain: Option<String>,
    },
    /// Work on the store itself.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// List the plugins found, with name, version, ABI version and path.
    Plugins {
        /// Read only its `daemon.plugin_dirs` [default: /etc/tally/tally.toml
        /// if it exists, else the default plugin directory:
        /// lib/tally/plugins beside the executable's directory]
        #[arg(long, env = "TALLY_CONFIG")]
        config: Option<PathBuf>,
        /// Print plugin NAME's settings schema (JSON Schema) and an example
        /// `[sources.settings]` instead of the list.
        #[arg(long, value_name = "NAME", conflicts_with_all = ["settings_reference", "check_exec"])]
        settings: Option<String>,
        /// Print the settings reference of every plugin found (docs/plugins.md).
        #[arg(long, conflicts_with = "check_exec")]
        settings_reference: bool,
        /// Run COMMAND (with its arguments) the way the `exec` plugin would, on
        /// a sample request, and check its output against the exec protocol.
        #[arg(long, value_name = "COMMAND", num_args = 1.., allow_hyphen_values = true)]
        check_exec: Vec<String>,
    },
    /// Write a new plugin crate NAME (an API plugin skeleton, its tests with
    /// the SDK's test kit, a README) into ./NAME or --dir.
    NewPlugin {
        name: String,
        /// The directory to create (default: ./NAME); it must not exist.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The SDK as a path dependency (default: this checkout's plugins/sdk
        /// when tallyd runs from one, otherwise the published SDK by version).
        #[arg(long, value_name = "PATH", conflicts_with = "sdk_registry")]
        sdk_path: Option<PathBuf>,
        /// Depend on the published SDK by version even inside a checkout.
        #[arg(long)]
        sdk_registry: bool,
    },
    /// Hosts one plugin library for a source with `isolation = "process"`;
    /// started by tallyd itself, speaking JSON lines on stdin and stdout.
    #[command(hide = true)]
    PluginHost {
        #[arg(long)]
        library: PathBuf,
        /// Address-space limit in MiB (0: none).
        #[arg(long, default_value_t = 0)]
        memory_limit_mb: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Copy the SQLite store of data_dir (or --from) into the empty
    /// PostgreSQL database of [store] url, then compare every quarter's
    /// summary on both; stop the daemon first.
    Copy {
        #[arg(long, env = "TALLY_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The data directory holding tally.db [default: daemon.data_dir]
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    Json,
    Csv,
    Md,
    /// An Excel workbook; needs --out unless stdout is redirected.
    Xlsx,
    /// The 情况报告 as a Word document; needs --out unless stdout is redirected.
    Docx,
    /// The 情况报告 as Markdown.
    NarrativeMd,
}

impl From<ReportFormat> for tally_daemon::reports::Format {
    fn from(f: ReportFormat) -> Self {
        match f {
            ReportFormat::Json => tally_daemon::reports::Format::Json,
            ReportFormat::Csv => tally_daemon::reports::Format::Csv,
            ReportFormat::Md => tally_daemon::reports::Format::Md,
            ReportFormat::Xlsx => tally_daemon::reports::Format::Xlsx,
            ReportFormat::Docx => tally_daemon::reports::Format::Docx,
            ReportFormat::NarrativeMd => tally_daemon::reports::Format::NarrativeMd,
        }
    }
}

/// A mistake the user can fix: exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

/// Maps an error to the exit codes the README gives: 1 for user errors, 2 for internal ones.
pub fn exit_code(err: &anyhow::Error) -> ExitCode {
    let user = err.chain().any(|e| {
        e.is::<UserError>()
            || e.is::<tally_config::ConfigError>()
            || e.downcast_ref::<StartError>()
                .is_some_and(StartError::is_user_error)
    });
    if user {
        ExitCode::from(1)
    } else {
        ExitCode::from(2)
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // The plugin host owns its own runtime and blocks on stdin: it must not
    // run inside the daemon's runtime.
    if let Command::PluginHost {
        library,
        memory_limit_mb,
    } = &cli.command
    {
        tally_host::serve_child(library, *memory_limit_mb).map_err(anyhow::Error::msg)?;
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(dispatch(cli.command))
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config } => {
            let config = load(&config)?;
            let daemon = Daemon::start(config).await?;
            daemon.serve(daemon::shutdown_signal()).await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => check(&config),
        Command::Collect {
            config,
            source,
            from,
            to,
            dry_run,
        } => collect(&config, &source, from.zip(to), dry_run).await,
        Command::Report {
            config,
            period,
            unit: Some(unit),
            format,
            out,
            explain: Some(indicator),
        } => explain(&config, &period, unit, indicator, format, out.as_deref()),
        Command::Report {
            config,
            period,
            unit,
            format,
            out,
            explain: _,
        } => {
            let format = format.unwrap_or(ReportFormat::Json);
            report(&config, &period, unit, format, out.as_deref()).await
        }
        Command::Store {
            command: StoreCommand::Copy { config, from },
        } => store_copy(&config, from.as_deref()).await,
        Command::Plugins {
            config,
            settings,
            settings_reference,
            check_exec,
        } => {
            if !check_exec.is_empty() {
                return crate::exec_check::run(&check_exec).await;
            }
            let registry = PluginRegistry::scan(&plugin_dirs(config.as_deref())?);
            match settings {
                Some(name) => plugin_settings(&registry, &name),
                None if settings_reference => {
                    let mut found: Vec<_> = registry.plugins().map(|p| &p.description).collect();
                    found.sort_by(|a, b| a.name.cmp(&b.name));
                    let page = tally_host::settings::reference(&found);
                    std::io::stdout().lock().write_all(page.as_bytes())?;
                    Ok(ExitCode::SUCCESS)
                }
                None => plugins(config.as_deref()),
            }
        }
        Command::NewPlugin {
            name,
            dir,
            sdk_path,
            sdk_registry,
        } => new_plugin(&name, dir, sdk_path, sdk_registry),
        Command::PluginHost { .. } => unreachable!("handled before the runtime starts"),
    }
}

fn new_plugin(
    name: &str,
    dir: Option<PathBuf>,
    sdk_path: Option<PathBuf>,
    sdk_registry: bool,
) -> anyhow::Result<ExitCode> {
    use crate::new_plugin::{NewPluginError, Sdk, generate};
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let sdk = match (sdk_path, sdk_registry) {
        (Some(path), _) => {
            if !path.join("Cargo.toml").is_file() {
                return Err(UserError(format!(
                    "--sdk-path {}: no Cargo.toml there",
                    path.display()
                ))
                .into());
            }
            Sdk::Path(std::path::absolute(&path).unwrap_or(path))
        }
        (None, true) => Sdk::Registry,
        (None, false) => Sdk::default_for_this_build(),
    };
    let files = generate(name, &dir, &sdk).map_err(|e| match e {
        NewPluginError::Io { .. } => anyhow::Error::new(e),
        user => UserError(user.to_string()).into(),
    })?;
    let mut out = std::io::stdout().lock();
    for file in &files {
        writeln!(out, "wrote {}", file.display())?;
    }
    let sdk = match &sdk {
        Sdk::Path(path) => format!("the SDK at {}", path.display()),
        Sdk::Registry => "the published SDK (tally-plugin 1)".to_owned(),
    };
    writeln!(
        out,
        "a plugin crate using {sdk}; next: cd {} && cargo test, then look for TODO(author)",
        dir.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

fn check(path: &Path) -> anyhow::Result<ExitCode> {
    // An unset secret does not stop the check: every one is reported at the
    // end, with whatever else is wrong, once plugins have been loaded and
    // have validated their settings (with the reference text in its place).
    let (mut config, unresolved) = Config::load_deferring_secrets(path)?;
    let with_unresolved = |e: ConfigError| -> anyhow::Error {
        let mut problems = e.problems();
        problems.extend(unresolved.iter().cloned());
        ConfigError::from_problems(problems).into()
    };
    let tree = config.unit_tree().map_err(with_unresolved)?;
    let registry = PluginRegistry::scan(&config.daemon.plugin_dirs);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // `check` makes no request (no runtime): the gate is only for the type.
    let gate = Arc::new(tally_host::HttpGate::new(
        config.daemon.http_per_host_concurrency,
        config.daemon.http_per_host_rate,
    ));
    let services = daemon::host_services(&config, clock.clone(), None, gate)?;
    let created =
        engine::create_sources(&mut config, &registry, &services).map_err(with_unresolved)?;
    let mut out = std::io::stdout().lock();
    if unresolved.is_empty() {
        writeln!(out, "{}: ok", config.path.display())?;
    } else {
        writeln!(
            out,
            "{}: {} secrets not set (see the errors); everything else checked",
            config.path.display(),
            unresolved.len()
        )?;
    }
    writeln!(
        out,
        "  {} units ({} roots), {} indicators, {} targets, {} sources",
        tree.len(),
        tree.roots().len(),
        config.indicators.len(),
        config.targets.len(),
        config.sources.len()
    )?;
    for lib in registry.plugins() {
        writeln!(
            out,
            "  plugin {} {} (ABI v{}) {}",
            lib.name,
            lib.version,
            lib.abi_major,
            lib.path.display()
        )?;
    }
    for refused in registry.refused() {
        writeln!(out, "  refused: {refused}")?;
    }
    let now = clock.now();
    let tz = config.daemon.timezone;
    for (idx, instance) in &created {
        let s = &config.sources[*idx];
        writeln!(
            out,
            "  source {} (plugin {}, units {} ({}), schedule \"{}\", timeout {}) emits {}",
            s.id,
            s.plugin,
            s.units.join(", "),
            s.coverage.as_str(),
            s.schedule_text,
            engine::humanize(s.timeout),
            s.mapped_emits(&instance.created.emits).join(", ")
        )?;
        let next: Vec<String> = s
            .next_runs(now, tz, 3)
            .iter()
            .map(|t| t.to_rfc3339())
            .collect();
        writeln!(out, "    next runs: {}", next.join(", "))?;
    }
    for s in config.sources.iter().filter(|s| !s.enabled) {
        writeln!(out, "  source {} is disabled", s.id)?;
    }
    // Declare once: these work as the plugins declare them; the snippet is
    // there to rename one, set its unit or give it targets.
    let adopted: Vec<_> = config
        .indicators
        .iter()
        .filter(|i| i.declared_by.is_some())
        .collect();
    if !adopted.is_empty() {
        writeln!(
            out,
            "  {} indicators are declared by their plugins, not in the file; to rename one, set its unit or give it targets, add:",
            adopted.len()
        )?;
        for i in adopted {
            writeln!(
                out,
                "\n# declared by plugin {}",
                i.declared_by.as_deref().unwrap_or_default()
            )?;
            write!(out, "{}", i.toml_snippet())?;
        }
    }
    let mut failed = false;
    for problem in &unresolved {
        eprintln!("error: {problem}");
        failed = true;
    }
    // A library the daemon would refuse is an error for `check` (exit 1), even
    // if no source uses it: the operator put it there for a reason.
    if !registry.refused().is_empty() {
        eprintln!(
            "error: {} plugin libraries refused (see above)",
            registry.refused().len()
        );
        failed = true;
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `; retry after TIME` (in the daemon's time zone) for a run whose
/// platform said when it accepts requests again.
fn retry_note(retry_after: Option<chrono::DateTime<chrono::Utc>>, engine: &Engine) -> String {
    retry_after
        .map(|t| {
            format!(
                "; retry after {}",
                t.with_timezone(&engine.config.daemon.timezone).to_rfc3339()
            )
        })
        .unwrap_or_default()
}

async fn collect(
    path: &Path,
    source: &str,
    range: Option<(NaiveDate, NaiveDate)>,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let config = load(path)?;
    let engine = daemon::build_engine(config, Arc::new(SystemClock))?;
    let runtime = engine
        .source(source)
        .cloned()
        .ok_or_else(|| UserError(format!("unknown source \"{source}\" (or it is disabled)")))?;
    let windows = match range {
        None => vec![engine.next_window(&runtime)?],
        Some((from, to)) => {
            if from > to {
                return Err(UserError(format!("--from {from} is after --to {to}")).into());
            }
            // Days that have not begun have nothing to collect yet.
            let today = engine.today();
            if from > today {
                return Err(UserError(format!(
                    "--from {from} is after today ({today} in {}): there is nothing to collect yet",
                    engine.config.daemon.timezone.name()
                ))
                .into());
            }
            if to > today {
                eprintln!("--to {to} is after today: collecting up to {today}");
            }
            // Windows of at most `BACKFILL_CHUNK_DAYS`, so that progress shows
            // and a failure loses at most one window of work.
            engine::backfill_windows(from, to, today)
        }
    };
    let total = windows.len();
    let mut failed = false;
    let mut stdout = std::io::stdout().lock();
    for (i, window) in windows.into_iter().enumerate() {
        if dry_run {
            let collected = engine.dry_run(source, window).await?;
            for o in &collected.observations {
                let line = serde_json::json!({
                    "source": o.source, "unit": o.unit, "indicator": o.indicator,
                    "entity": o.entity, "day": o.day, "value": o.value,
                });
                writeln!(stdout, "{line}")?;
            }
            for w in &collected.warnings {
                eprintln!("warning: {w}");
            }
            if !collected.uncovered.is_empty() {
                eprintln!(
                    "uncovered: {}",
                    tally_daemon::engine::day_ranges(&collected.uncovered).join(", ")
                );
            }
            if let Some(e) = &collected.error {
                eprintln!(
                    "{source}: {}{} {}..{}: {e}{}",
                    collected.result.as_str(),
                    tally_daemon::metrics::error_kind_label(collected.result, collected.error_kind)
                        .map(|k| format!(" ({k})"))
                        .unwrap_or_default(),
                    window.from,
                    window.to,
                    retry_note(collected.retry_after, &engine)
                );
                failed = true;
            }
            continue;
        }
        let trigger = if range.is_some() {
            Trigger::Backfill
        } else {
            Trigger::Manual
        };
        let report = engine.run(source, trigger, Some(window)).await?;
        eprintln!(
            "[{}/{}] {} {}..{}: {}{}, {} observations{}{}{}{}",
            i + 1,
            total,
            source,
            window.from,
            window.to,
            report.result,
            report
                .error_kind
                .map(|k| format!(" ({k})"))
                .unwrap_or_default(),
            report.observations,
            if report.uncovered.is_empty() {
                String::new()
            } else {
                format!(", uncovered {}", report.uncovered.join(", "))
            },
            if report.warnings.is_empty() {
                String::new()
            } else {
                format!(", {} warnings", report.warnings.len())
            },
            report
                .error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default(),
            retry_note(report.retry_after, &engine)
        );
        for w in &report.warnings {
            eprintln!("  warning: {w}");
        }
        failed |= report.error.is_some();
    }
    if !dry_run {
        tell_running_daemon(&engine.config.daemon.data_dir);
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// After `collect` stored something: whether a daemon serves this store,
/// and when its `/metrics` shows the new data (it notices the write itself,
/// see [`daemon::METRICS_OUTSIDE_CHECK`]; summaries, reports and
/// `/api/v1/observations` read the store on each request).
fn tell_running_daemon(data_dir: &Path) {
    if let Some(holder) = tally_store::DataDirLock::holder(data_dir) {
        eprintln!(
            "tallyd ({holder}) serves this data_dir ({}): its summaries show the new data now, its /metrics within {} (it notices the store changed)",
            data_dir.display(),
            engine::humanize(daemon::METRICS_OUTSIDE_CHECK * 2)
        );
    }
}

async fn report(
    path: &Path,
    period: &str,
    unit: Option<String>,
    format: ReportFormat,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let period = Period::parse(period).map_err(|e| UserError(e.to_string()))?;
    if matches!(format, ReportFormat::Xlsx | ReportFormat::Docx)
        && out.is_none()
        && std::io::stdout().is_terminal()
    {
        let format = tally_daemon::reports::Format::from(format);
        return Err(UserError(format!(
            "an {} report is binary and would garble the terminal: use --out FILE (or redirect stdout)",
            format.as_str()
        ))
        .into());
    }
    let config = load(path)?;
    let engine = daemon::build_engine(config, Arc::new(SystemClock))?;
    let request = SummaryRequest {
        period,
        unit,
        depth: None,
    };
    let summary = engine.summary(&request).map_err(|e| match e {
        summary::SummaryError::UnknownUnit { .. } => anyhow::Error::new(UserError(e.to_string())),
        other => anyhow::Error::new(other),
    })?;
    let bytes = tally_daemon::reports::render(
        tally_daemon::reports::Format::from(format),
        &summary,
        &tally_daemon::narrative::Narrative::from_config(&engine.config),
    )?;
    match out {
        Some(file) => {
            std::fs::write(file, &bytes).with_context(|| format!("writing {}", file.display()))?
        }
        None => std::io::stdout().lock().write_all(&bytes)?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn store_copy(path: &Path, from: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = load(path)?;
    let from = from.map_or_else(|| config.daemon.data_dir.clone(), Path::to_path_buf);
    eprintln!("tallyd: copying the SQLite store in {} ...", from.display());
    let outcome = crate::store_copy::run(config, &from, &mut |c| {
        eprintln!(
            "tallyd: {} runs, {} observations copied",
            c.runs, c.observations
        );
    })
    .await?;
    let c = outcome.copied;
    println!(
        "copied {} runs, {} observations, {} resume states",
        c.runs, c.observations, c.states
    );
    let mut differ = 0;
    for (quarter, difference) in &outcome.quarters {
        match difference {
            None => println!("{quarter}: same summary before and after"),
            Some(what) => {
                differ += 1;
                println!("{quarter}: DIFFERS at {what}");
            }
        }
    }
    if differ > 0 {
        return Err(anyhow::anyhow!(
            "{differ} of {} quarters differ after the copy: keep using the SQLite store and report this",
            outcome.quarters.len()
        ));
    }
    println!("every quarter's summary is the same: point the daemon at [store] url and start it");
    Ok(ExitCode::SUCCESS)
}

/// `report --explain`: the observations behind one figure, as JSON with
/// `--format json`, else as a table.
fn explain(
    path: &Path,
    period: &str,
    unit: String,
    indicator: String,
    format: Option<ReportFormat>,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let period = Period::parse(period).map_err(|e| UserError(e.to_string()))?;
    let config = load(path)?;
    let engine = daemon::build_engine(config, Arc::new(SystemClock))?;
    let request = summary::ExplainRequest {
        period,
        unit,
        indicator,
    };
    let explained = summary::explain(&engine.config, &engine.tree, &*engine.store, &request)
        .map_err(|e| {
            if e.is_user_error() {
                anyhow::Error::new(UserError(e.to_string()))
            } else {
                anyhow::Error::new(e)
            }
        })?;
    let bytes = match format {
        Some(ReportFormat::Json) => {
            let mut v = serde_json::to_vec_pretty(&explained)?;
            v.push(b'\n');
            v
        }
        _ => explained.to_table().into_bytes(),
    };
    match out {
        Some(file) => {
            std::fs::write(file, &bytes).with_context(|| format!("writing {}", file.display()))?
        }
        None => std::io::stdout().lock().write_all(&bytes)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn plugin_dirs(config: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    // Listing plugins needs no configuration file: without one (a tarball
    // unpacked anywhere, a machine not set up yet) the default directory is
    // what the daemon would search.
    let default = Path::new(DEFAULT_CONFIG);
    let config = config.or_else(|| default.is_file().then_some(default));
    Ok(match config {
        // Only `plugin_dirs` is read: listing plugins needs no secret and
        // no valid rest of the file.
        Some(path) => Config::load_plugin_dirs(path)?,
        None => daemon::exe_dir()
            .map(|dir| Config::default_plugin_dir(&dir))
            .into_iter()
            .collect(),
    })
}

/// `plugins --settings NAME`: the schema, then an example table.
fn plugin_settings(registry: &PluginRegistry, name: &str) -> anyhow::Result<ExitCode> {
    let Some(lib) = registry.get(name) else {
        let known: Vec<&str> = registry.plugins().map(|p| p.name.as_str()).collect();
        return Err(UserError(format!(
            "unknown plugin \"{name}\" (found: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
        .into());
    };
    let Some(schema) = &lib.description.settings_schema else {
        return Err(UserError(format!(
            "plugin \"{name}\" ({}) declares no settings schema: see its documentation",
            lib.path.display()
        ))
        .into());
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "# JSON Schema of the settings of plugin \"{name}\"")?;
    writeln!(out, "{}", serde_json::to_string_pretty(schema)?)?;
    writeln!(out)?;
    writeln!(out, "# Example")?;
    write!(out, "{}", tally_host::settings::example(schema))?;
    Ok(ExitCode::SUCCESS)
}

fn plugins(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let dirs = plugin_dirs(config)?;
    let registry = PluginRegistry::scan(&dirs);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<16} {:<10} {:<4} {:<8} PATH",
        "NAME", "VERSION", "ABI", "SDK"
    )?;
    for lib in registry.plugins() {
        writeln!(
            out,
            "{:<16} {:<10} {:<4} {:<8} {}",
            lib.name,
            lib.version,
            format!("v{}", lib.abi_major),
            lib.sdk_version,
            lib.path.display()
        )?;
        if !lib.description.summary.is_empty() {
            writeln!(out, "  {}", lib.description.summary)?;
        }
    }
    if !registry.refused().is_empty() {
        writeln!(out)?;
        for refused in registry.refused() {
            writeln!(out, "refused: {refused}")?;
        }
    }
    if registry.plugins().next().is_none() {
        let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        writeln!(out, "no plugins found in {}", shown.join(", "))?;
    }
    Ok(ExitCode::SUCCESS)
}
