//! Creating sources: a plugin instance per enabled source, through which each
//! plugin validates its settings, and the checks of what they emit.

use super::*;

/// The catalogue handed to a source's plugin in each request: a configured
/// indicator that the source's `[sources.indicators]` maps an emitted id to
/// is listed under that emitted id (first, so that a column named by the
/// indicator's display name resolves to the id the plugin knows), and not
/// under its own; the others as configured.
pub(super) fn plugin_catalogue(
    source: &SourceConfig,
    catalogue: &[IndicatorRef],
) -> Vec<IndicatorRef> {
    let mut out: Vec<IndicatorRef> = source
        .indicators
        .iter()
        .filter_map(|(emitted, mapped)| {
            let target = catalogue.iter().find(|i| Some(&i.id) == mapped.as_ref())?;
            Some(IndicatorRef {
                id: emitted.clone(),
                ..target.clone()
            })
        })
        .collect();
    out.extend(
        catalogue
            .iter()
            .filter(|i| {
                !source
                    .indicators
                    .values()
                    .any(|m| m.as_ref() == Some(&i.id))
            })
            .cloned(),
    );
    out
}

/// Creates a plugin instance for every enabled source, through which each
/// plugin validates its settings, adds the indicators their plugins declare
/// and the file does not ([`Config::adopt_plugin_indicators`]), then checks
/// which indicators they emit against the catalogue. Reports every problem,
/// each at its place in the file.
pub fn create_sources(
    config: &mut Config,
    registry: &PluginRegistry,
    services: &HostServices,
) -> Result<Vec<(usize, Arc<SourceRunner>)>, ConfigError> {
    create_sources_reusing(config, registry, services, None)
}

/// [`create_sources`] for a reload: a source of `previous` whose plugin
/// instance can be kept ([`SourceConfig::same_instance`], and the registry still maps its
/// plugin name to the same library) keeps it, with its in-memory caches;
/// every other enabled source gets a new instance, through which its plugin
/// validates its settings. Reports every problem, each at its place in the file.
pub fn create_sources_reusing(
    config: &mut Config,
    registry: &PluginRegistry,
    services: &HostServices,
    previous: Option<&Engine>,
) -> Result<Vec<(usize, Arc<SourceRunner>)>, ConfigError> {
    let mut problems = Vec::new();
    let mut created = Vec::new();
    let mut emits = HashMap::new();
    for (idx, source) in config.sources.iter().enumerate() {
        if !source.enabled {
            continue;
        }
        let Some(lib) = registry.get(&source.plugin) else {
            let known: Vec<&str> = registry.plugins().map(|p| p.name.as_str()).collect();
            problems.push(Problem {
                location: config.location(&format!("sources[{idx}].plugin")),
                message: format!(
                    "unknown plugin \"{}\" (loaded plugins: {}; see `tallyd plugins`)",
                    source.plugin,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            });
            continue;
        };
        let kept = previous.and_then(|p| p.source(&source.id)).filter(|old| {
            old.config.same_instance(source) && Arc::ptr_eq(&old.instance.plugin, lib)
        });
        if let Some(old) = kept {
            emits.insert(source.id.clone(), old.instance.created.emits.clone());
            created.push((idx, old.instance.clone()));
            continue;
        }
        // The schema names every wrong key at its line, where the plugin's
        // own check would stop at the first; the plugin then is not called.
        if let Some(schema) = &lib.description.settings_schema {
            let found = tally_host::settings::check_source(config, idx, schema);
            if !found.is_empty() {
                // A message may quote a value, and a value may be a secret.
                problems.extend(found.into_iter().map(|mut p| {
                    p.message = (services.redact)(&p.message);
                    p
                }));
                continue;
            }
        }
        match create_runner(lib, source, services) {
            Ok(runner) => {
                emits.insert(source.id.clone(), runner.created.emits.clone());
                created.push((idx, Arc::new(runner)));
            }
            Err(e) => problems.push(settings_problem(config, idx, &e, services)),
        }
    }
    if problems.is_empty() {
        let described = config
            .sources
            .iter()
            .filter_map(|s| registry.get(&s.plugin))
            .map(|lib| (lib.name.clone(), lib.description.indicators.clone()))
            .collect();
        config.adopt_plugin_indicators(&emits, &described);
        config.check_emits(&emits)?;
        return Ok(created);
    }
    problems.sort_by_key(|p| (p.location.line, p.location.column));
    Err(ConfigError::Several { problems })
}

/// Creates a source's plugin instance where its `isolation` says: inside the
/// daemon, or in a `tallyd plugin-host` child of the running executable.
pub(super) fn create_runner(
    lib: &Arc<tally_host::PluginLibrary>,
    source: &SourceConfig,
    services: &HostServices,
) -> Result<SourceRunner, CallError> {
    match source.isolation {
        Isolation::None => {
            SourceInstance::create(lib.clone(), &source.id, &source.settings, services.clone())
                .map(SourceRunner::in_process)
        }
        Isolation::Process => {
            let exe = std::env::current_exe()
                .map_err(|e| CallError::Crash(format!("cannot find the tallyd executable: {e}")))?;
            ProcessInstance::create(
                exe,
                lib.path.clone(),
                &source.id,
                &source.settings,
                source.memory_limit_mb,
                services.redact.clone(),
            )
            .map(|p| SourceRunner::process(lib.clone(), p))
        }
    }
}

/// Places a plugin's settings error at the setting it names, when its message
/// starts with a settings path such as `rows[1].path: ...`.
pub(super) fn settings_problem(
    config: &Config,
    idx: usize,
    err: &CallError,
    services: &HostServices,
) -> Problem {
    let text = (services.redact)(&err.to_string());
    if let CallError::Plugin(e) = err
        && let Some((path, rest)) = e.message.split_once(": ")
        && !path.is_empty()
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']'))
    {
        let pointer: String = path
            .replace('[', ".")
            .replace(']', "")
            .split('.')
            .filter(|s| !s.is_empty())
            .map(|s| format!("/{s}"))
            .collect();
        return Problem {
            location: config.settings_location(idx, &pointer),
            message: (services.redact)(rest),
        };
    }
    Problem {
        location: config.location(&format!("sources[{idx}].settings")),
        message: text,
    }
}
