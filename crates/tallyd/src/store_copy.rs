//! `tallyd store copy`: the SQLite store of `data_dir` copied into the
//! PostgreSQL database of `[store] url`, then checked by computing every
//! quarter's summary on both and comparing them.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde_json::Value;

use tally_config::Config;
use tally_daemon::daemon;
use tally_daemon::summary::SummaryRequest;
use tally_domain::clock::{Clock, SystemClock};
use tally_domain::period::{Period, PeriodKind, local_day};
use tally_store::copy::{self, Copied};
use tally_store::{DataDirLock, PostgresStore, SqliteStore, Store};

use crate::cli::UserError;

/// What a copy did and found.
pub struct Outcome {
    pub copied: Copied,
    /// Each quarter from the first observed day's to today's, and where its
    /// summaries differ (`None`: equal).
    pub quarters: Vec<(String, Option<String>)>,
}

pub async fn run(
    config: Config,
    from: &Path,
    progress: &mut dyn FnMut(&Copied),
) -> anyhow::Result<Outcome> {
    let Some(target) = config.store.as_ref() else {
        return Err(UserError(
            "set [store] url to the PostgreSQL database to copy into (the copy reads data_dir's \
             SQLite store and writes there)"
                .to_owned(),
        )
        .into());
    };
    if !from.join("tally.db").is_file() {
        return Err(UserError(format!(
            "{} holds no tally.db: nothing to copy (--from names the data_dir of the SQLite store)",
            from.display()
        ))
        .into());
    }
    // A daemon writing the SQLite store meanwhile would make the copy a
    // snapshot of a moving store: stop it first.
    let _lock = DataDirLock::acquire(from)?;
    let sqlite = Arc::new(SqliteStore::open(from)?);
    let url = target.url.expose().to_owned();
    let postgres = Arc::new(tokio::task::spawn_blocking(move || PostgresStore::open(&url)).await??);
    let copied = {
        let (sqlite, postgres) = (sqlite.clone(), postgres.clone());
        // The progress callback is not Send: copy on this thread, outside
        // the runtime's workers' way.
        tokio::task::block_in_place(|| copy::sqlite_to_postgres(&sqlite, &postgres, progress))
            .map_err(|e| match e {
                copy::CopyError::NotEmpty { .. } => {
                    anyhow::Error::new(UserError(tally_domain::ErrorChain(&e).to_string()))
                }
                other => anyhow::Error::new(other),
            })?
    };
    let quarters = compare(config, sqlite, postgres)?;
    Ok(Outcome { copied, quarters })
}

/// Every quarter's summary on both stores, compared with the time they
/// were made left out.
fn compare(
    config: Config,
    before: Arc<dyn Store>,
    after: Arc<dyn Store>,
) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let today = local_day(clock.now(), config.daemon.timezone);
    let first = before.first_day()?;
    let old = daemon::build_engine_on(config.clone(), clock.clone(), before)?;
    let new = daemon::build_engine_on(config, clock, after)?;
    let Some(first) = first else {
        return Ok(Vec::new());
    };
    let mut quarter = Period::containing(PeriodKind::Quarter, first.min(today));
    let last = Period::containing(PeriodKind::Quarter, today);
    let mut out = Vec::new();
    loop {
        let request = SummaryRequest {
            period: quarter.clone(),
            unit: None,
            depth: None,
        };
        let summarize = |engine: &tally_daemon::engine::Engine| -> anyhow::Result<Value> {
            let mut summary = engine
                .summary(&request)
                .with_context(|| format!("computing the summary of {}", quarter.label()))?;
            summary.generated_at.clear();
            Ok(serde_json::to_value(&summary)?)
        };
        let (a, b) = (summarize(&old)?, summarize(&new)?);
        out.push((quarter.label().to_owned(), first_difference(&a, &b, "")));
        if quarter.start >= last.start {
            break;
        }
        quarter = Period::containing(
            PeriodKind::Quarter,
            quarter.end.succ_opt().unwrap_or(last.start),
        );
    }
    Ok(out)
}

/// Where two JSON values first differ, as a path with both values.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .iter()
            .find_map(|(k, v)| {
                first_difference(v, y.get(k).unwrap_or(&Value::Null), &format!("{at}.{k}"))
            })
            .or_else(|| {
                y.keys()
                    .find(|k| !x.contains_key(*k))
                    .map(|k| format!("{at}.{k}: missing before the copy"))
            }),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, &format!("{at}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{at}: {a} before, {b} after")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_difference_is_named_by_its_path() {
        let a = json!({"units": [{"id": "county", "values": {"posts": 3}}], "x": 1});
        assert_eq!(first_difference(&a, &a.clone(), ""), None);
        let b = json!({"units": [{"id": "county", "values": {"posts": 4}}], "x": 1});
        assert_eq!(
            first_difference(&a, &b, "").as_deref(),
            Some(".units[0].values.posts: 3 before, 4 after")
        );
        let c = json!({"units": [], "x": 1});
        assert!(
            first_difference(&a, &c, "")
                .unwrap()
                .starts_with(".units: ")
        );
    }
}
