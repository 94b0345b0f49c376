//! Report files: the statistics table of a quarter written to disk on a
//! schedule (`[reports]`, by default the first day of each quarter at 10:00
//! for the quarter just ended), and the listing behind `GET /api/v1/reports`.
//!
//! A written report is never overwritten: writing `2026-Q3.xlsx` again
//! gives `2026-Q3.r2.xlsx`, then `r3`, so a clerk who already handed a file
//! on can still find it. Each file is written to a temporary name in the
//! same directory and then linked to its final name, which fails rather
//! than replaces when the name is taken; readers never see half a file. A
//! temporary file left by a write cut short (the daemon killed midway) is
//! removed at the next start ([`remove_stale_temp_files`]).
//!
//! The schedule is decided by the pure [`due`], given the time of the last
//! check and the engine's clock, so tests move a fake clock over a quarter
//! boundary instead of waiting for one.
//!
//! Reports are caught up as missed runs are: at start and after a reload,
//! [`catch_up`] writes the report of every quarter the schedule has already
//! fired for ([`catch_up_periods`]: the last four at most, none before the
//! store's first observation) in each format that has no file for it yet.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use thiserror::Error;

use crate::engine::Engine;
use crate::narrative::Narrative;
use crate::summary::{self, ReportError, Summary, SummaryError, SummaryRequest};
use tally_config::Config;
use tally_domain::period::{Period, PeriodKind, local_day};

pub use tally_config::ReportFormat as Format;

/// The summary in `format`; `narrative` drafts the 情况报告 of the prose
/// formats (`docx`, `narrative-md`).
pub fn render(
    format: Format,
    summary: &Summary,
    narrative: &Narrative,
) -> Result<Vec<u8>, ReportError> {
    Ok(match format {
        Format::Json => {
            // Serializing plain data to memory cannot fail.
            let mut v = serde_json::to_vec_pretty(summary).unwrap_or_default();
            v.push(b'\n');
            v
        }
        Format::Csv => summary::to_csv(summary),
        Format::Md => summary::to_markdown(summary).into_bytes(),
        Format::Xlsx => summary::to_xlsx(summary)?,
        Format::Docx => narrative.draft(summary)?.to_docx()?,
        Format::NarrativeMd => narrative.draft(summary)?.to_markdown().into_bytes(),
    })
}

#[derive(Debug, Error)]
pub enum WriteError {
    #[error("cannot write report {} (check that the directory, [reports] dir, exists or can be created and is writable)", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot list reports in {}", dir.display())]
    List {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Render(#[from] ReportError),
    #[error("cannot build the summary for the report")]
    Summary(#[from] SummaryError),
}

/// The most recent time the schedule fired in `(last, now]`, read in `tz`;
/// `None` if it did not. Pure: the caller keeps `last` (the time it last
/// checked) and asks with its clock's `now`.
pub fn due(
    schedule: &cron::Schedule,
    tz: Tz,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    schedule
        .after(&last.with_timezone(&tz))
        .map(|t| t.with_timezone(&Utc))
        .take_while(|t| *t <= now)
        .last()
}

/// The next time the schedule fires after `after`.
pub fn next_fire(schedule: &cron::Schedule, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule
        .after(&after.with_timezone(&tz))
        .next()
        .map(|t| t.with_timezone(&Utc))
}

/// The quarter a report written at `at` is for: the last one that ended
/// before `at`'s local day (2026-Q3 on 2026-10-01 02:00 in Shanghai).
pub fn report_period(at: DateTime<Utc>, tz: Tz) -> Period {
    Period::containing(PeriodKind::Quarter, local_day(at, tz)).previous()
}

/// How many quarters back a start catches reports up.
pub const CATCH_UP_QUARTERS: usize = 4;

/// The quarters whose reports the schedule has written by `now`, if it ran:
/// the quarter of its most recent fire at or before `now`
/// ([`report_period`]) and the ones before it, [`CATCH_UP_QUARTERS`] in
/// all, oldest first, leaving out quarters that ended before `first_day`
/// (the store's first observation; `None`, an empty store: nothing).
pub fn catch_up_periods(
    schedule: &cron::Schedule,
    tz: Tz,
    now: DateTime<Utc>,
    first_day: Option<NaiveDate>,
) -> Vec<Period> {
    let Some(first_day) = first_day else {
        return Vec::new();
    };
    // The cron iterator walks backwards too: the fire before a second past
    // `now` is the last one at or before it.
    let probe = (now + chrono::Duration::seconds(1)).with_timezone(&tz);
    let Some(fired) = schedule.after(&probe).next_back() else {
        return Vec::new();
    };
    let mut periods = Vec::new();
    let mut period = report_period(fired.with_timezone(&Utc), tz);
    for _ in 0..CATCH_UP_QUARTERS {
        if period.end < first_day {
            break;
        }
        let before = period.previous();
        periods.push(period);
        period = before;
    }
    periods.reverse();
    periods
}

/// The formats of `formats` that have no file (of any revision) for
/// `period` among `files`.
pub fn missing_formats(files: &[ReportFile], period: &Period, formats: &[Format]) -> Vec<Format> {
    formats
        .iter()
        .copied()
        .filter(|format| {
            !files
                .iter()
                .any(|f| f.period == period.label() && f.format == *format)
        })
        .collect()
}

/// What [`catch_up`] did for one quarter: the files written, or why not.
pub type CaughtUp = (Period, Result<Vec<PathBuf>, WriteError>);

/// Writes the reports missed while the daemon was down (blocking: reads the
/// store, writes files): for each quarter of [`catch_up_periods`] except
/// `skip` (the quarter `write_on_start` writes anyway), the formats of
/// `[reports]` that have no file yet. Existing files are never touched, so
/// a second start writes nothing. Returns each period written with its
/// outcome; a period that fails does not stop the others.
pub fn catch_up(engine: &Engine, skip: Option<&Period>) -> Result<Vec<CaughtUp>, WriteError> {
    let config = &engine.config;
    let first_day = engine
        .store
        .first_day()
        .map_err(|e| WriteError::Summary(SummaryError::Store(e)))?;
    let periods = catch_up_periods(
        &config.reports.schedule,
        config.daemon.timezone,
        engine.clock.now(),
        first_day,
    );
    let writer = ReportWriter::from_config(config);
    let files = writer.list()?;
    let mut out = Vec::new();
    for period in periods {
        if skip == Some(&period) {
            continue;
        }
        let formats = missing_formats(&files, &period, &writer.formats);
        if formats.is_empty() {
            continue;
        }
        let writer = ReportWriter {
            formats,
            ..writer.clone()
        };
        let written = engine
            .summary(&SummaryRequest::new(period.clone()))
            .map_err(WriteError::from)
            .and_then(|summary| writer.write(&summary));
        out.push((period, written));
    }
    Ok(out)
}

/// One report file found in the reports directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportFile {
    /// The period label: `2026-Q3`.
    pub period: String,
    pub format: Format,
    /// 1 for `2026-Q3.xlsx`, 2 for `2026-Q3.r2.xlsx`, ...
    pub revision: u32,
    /// The file name, without the directory.
    pub name: String,
    pub size: u64,
    /// The file's modification time, RFC 3339 in the configured time zone.
    pub written_at: Option<String>,
    /// The highest revision of its period and format.
    pub latest: bool,
}

/// The file name of a report: `2026-Q3.xlsx`, `2026-Q3.r2.xlsx`.
pub fn file_name(label: &str, revision: u32, format: Format) -> String {
    if revision <= 1 {
        format!("{label}.{}", format.extension())
    } else {
        format!("{label}.r{revision}.{}", format.extension())
    }
}

/// The inverse of [`file_name`]: `(label, revision, format)`, or `None` for
/// a file that is not a report (wrong extension, not a period label).
pub fn parse_file_name(name: &str) -> Option<(String, u32, Format)> {
    let (stem, format) = Format::split_file_name(name)?;
    let (label, revision) = match stem.rsplit_once(".r") {
        Some((label, rev)) if !rev.is_empty() && rev.bytes().all(|b| b.is_ascii_digit()) => {
            match rev.parse::<u32>() {
                Ok(n) if n >= 2 => (label, n),
                _ => return None,
            }
        }
        _ => (stem, 1),
    };
    Period::parse(label).ok()?;
    Some((label.to_owned(), revision, format))
}

/// Writes report files into one directory, never replacing one.
#[derive(Debug, Clone)]
pub struct ReportWriter {
    pub dir: PathBuf,
    pub formats: Vec<Format>,
    pub timezone: Tz,
    /// Drafts the 情况报告 formats.
    pub narrative: Narrative,
}

/// Makes temporary names unique within the process; the pid makes them
/// unique between processes sharing a directory.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl ReportWriter {
    pub fn new(dir: impl Into<PathBuf>, formats: Vec<Format>, timezone: Tz) -> ReportWriter {
        ReportWriter {
            dir: dir.into(),
            formats,
            timezone,
            narrative: Narrative::default(),
        }
    }

    /// The writer of `[reports]`, with its 情况报告 template.
    pub fn from_config(config: &Config) -> ReportWriter {
        ReportWriter {
            narrative: Narrative::from_config(config),
            ..ReportWriter::new(
                config.reports_dir(),
                config.reports.formats.clone(),
                config.daemon.timezone,
            )
        }
    }

    /// Writes `summary` in every format, each under the first free revision
    /// of its name; returns the paths written, in the order of the formats.
    pub fn write(&self, summary: &Summary) -> Result<Vec<PathBuf>, WriteError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| WriteError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let mut written = Vec::with_capacity(self.formats.len());
        for &format in &self.formats {
            let bytes = render(format, summary, &self.narrative)?;
            written.push(self.write_new(&summary.period.label, format, &bytes)?);
        }
        Ok(written)
    }

    /// Writes `bytes` to a temporary file, then links it to the first free
    /// revision. A hard link fails when the name exists, so a file written
    /// meanwhile by another process is skipped over, not replaced.
    fn write_new(&self, label: &str, format: Format, bytes: &[u8]) -> Result<PathBuf, WriteError> {
        let temp = self.dir.join(format!(
            ".{label}.{}.{}.{}.tmp",
            format.extension(),
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WriteError::Io { path, source }
        };
        write_synced(&temp, bytes).map_err(io(&temp))?;
        let result = (|| {
            for revision in 1u32.. {
                let path = self.dir.join(file_name(label, revision, format));
                if path.exists() {
                    continue;
                }
                match std::fs::hard_link(&temp, &path) {
                    Ok(()) => return Ok(path),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    // A file system without hard links: the check above is
                    // all that keeps an existing report, which is enough
                    // unless two writers race for the same name.
                    Err(_) => {
                        std::fs::rename(&temp, &path).map_err(io(&path))?;
                        return Ok(path);
                    }
                }
            }
            unreachable!("some revision is free")
        })();
        let _ = std::fs::remove_file(&temp);
        result
    }

    /// The report files in the directory (none if it does not exist yet),
    /// by period, format and revision, with `latest` on the highest
    /// revision of each period and format.
    pub fn list(&self) -> Result<Vec<ReportFile>, WriteError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(WriteError::List {
                    dir: self.dir.clone(),
                    source,
                });
            }
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| WriteError::List {
                dir: self.dir.clone(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((period, revision, format)) = parse_file_name(&name) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let written_at = meta.modified().ok().map(|t| {
                DateTime::<Utc>::from(t)
                    .with_timezone(&self.timezone)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
            });
            files.push(ReportFile {
                period,
                format,
                revision,
                name,
                size: meta.len(),
                written_at,
                latest: false,
            });
        }
        let start = |label: &str| Period::parse(label).map(|p| p.start).ok();
        files.sort_by(|a, b| {
            (start(&a.period), &a.period, a.format.as_str(), a.revision).cmp(&(
                start(&b.period),
                &b.period,
                b.format.as_str(),
                b.revision,
            ))
        });
        for i in 0..files.len() {
            let next_same = files
                .get(i + 1)
                .is_some_and(|n| n.period == files[i].period && n.format == files[i].format);
            files[i].latest = !next_same;
        }
        Ok(files)
    }
}

/// The writer of a temporary report file named by [`ReportWriter`]
/// (`.2026-Q3.xlsx.<pid>.<n>.tmp`), or `None` for any other name.
fn temp_file_writer(name: &str) -> Option<u32> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let mut parts = inner.rsplitn(3, '.');
    parts.next()?.parse::<u64>().ok()?;
    let pid = parts.next()?.parse::<u32>().ok()?;
    parse_file_name(parts.next()?)?;
    Some(pid)
}

/// Whether process `pid` exists (owned by anyone).
#[cfg(unix)]
fn process_lives(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e != rustix::io::Errno::SRCH,
    }
}

#[cfg(not(unix))]
fn process_lives(_: u32) -> bool {
    // Cannot tell: keep the file.
    true
}

/// Removes the temporary files that a write cut short (tallyd killed while
/// writing, a full disk) left in `dir`: those of a process that no longer
/// runs, and those with this process's own pid, which can only be left by an
/// earlier process that had the same pid (a daemon restarted in a container
/// is pid 1 again), since this one has not written yet. Call it at start,
/// before any report is written. A temporary file of a process that still
/// runs (another daemon writing to a shared `[reports] dir`) stays. Returns
/// the files removed; one that cannot be removed is logged and left.
pub fn remove_stale_temp_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut removed = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_file_writer(&name) else {
            continue;
        };
        if pid != me && process_lives(pid) {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "cannot remove a report temporary file left by an interrupted write"
            ),
        }
    }
    removed
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Builds the whole-tree summary of `period` and writes it with the
/// writer of `[reports]` (blocking: reads the store, writes files).
pub fn write_period(engine: &Engine, period: Period) -> Result<Vec<PathBuf>, WriteError> {
    let summary = engine.summary(&SummaryRequest::new(period))?;
    ReportWriter::from_config(&engine.config).write(&summary)
}

#[cfg(test)]
mod tests;
