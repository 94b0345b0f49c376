//! The Prometheus series of the README's Metrics table, served as one
//! pre-encoded body.
//!
//! A scrape never encodes: `GET /metrics` answers the latest body
//! ([`Metrics::exposition`]), a [`Bytes`] cloned under a lock held for
//! nothing else, put together from the body's parts by the first scrape of
//! that body (a copy of text already written, no encoding). The body is
//! rebuilt by [`Metrics::refresh`] when something
//! changed since the last rebuild: at most once a second by the daemon's
//! background task (`daemon::keep_metrics_fresh`), and at once at start, after
//! a reload and after a manual run (`Engine::refresh_metrics`), so that a
//! scrape right after those sees them.
//!
//! Everything is written straight into text, without a registry:
//!
//! - the indicator families (`tally_unit_info`, `tally_indicator_info`,
//!   `tally_indicator_value`, `tally_target_ratio`) come from the unit tree,
//!   the catalogue and the store's roll-ups: `refresh_indicators`
//!   writes them with [`IndicatorText`] and hands the text over with
//!   [`Metrics::set_indicator_families`]. It is kept until observations are
//!   written again ([`Metrics::values_changed`]), shared by every body until then;
//! - the per-source families are plain numbers per source, updated by run
//!   outcomes and the scheduler (a map lookup and a few additions under a
//!   mutex); a source's lines are written again only after it changed, and
//!   a body holds the lines of every source as they are;
//! - `tally_plugin_info`, `tally_build_info` and `tally_http_requests_total`
//!   (a prometheus-crate counter of the plugin host, at most a few hundred
//!   series) complete it.
//!
//! A scrape that accepts gzip gets the body's gzip copy ([`Body`]), made
//! lazily by the first such scrape after a rebuild and shared by every later
//! one of the same body, so that the copy and the plain body are always of the
//! same rebuild. A rebuild never compresses: at 10,000 sources the body
//! changes every second while Prometheus scrapes every 15 s or so, and
//! compressing each rebuild cost an 18 MB compression a second that no scrape
//! read.
//!
//! How many series: [`SOURCE_SERIES_BUDGET`] per source with the default
//! `[metrics]` (the duration histogram and errors by kind are opt-in, see
//! [`Metrics::configure`]); the indicator families are bounded by `[metrics]`
//! too (`indicator_text`).
//!
//! Every internal event that has a metric updates it here, so names, labels
//! and help texts stay in one place. Label values are bounded: unit,
//! indicator, source and plugin ids come from the configuration, results from
//! a fixed list.

mod encoding;
mod indicators;
mod sources;
pub use encoding::accepts_gzip;
pub use indicators::{indicator_text, refresh_indicators};
pub use sources::refresh_source_states;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use bytes::Bytes;
use prometheus::TextEncoder;
use prometheus::core::Collector;

use tally_host::HttpGate;
use tally_plugin::ErrorKind;
use tally_store::RunResult;

/// The `Content-Type` of the body.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family's name, help text and type.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
}

const INDICATOR_VALUE: Family = Family {
    name: "tally_indicator_value",
    help: "Value of an indicator for a unit (its own plus its descendants'), for the current period to date.",
    kind: "gauge",
};
const TARGET_RATIO: Family = Family {
    name: "tally_target_ratio",
    help: "Value over pro-rated target (per-unit targets) or share of entities on target (per-entity targets), current period to date; for indicators accumulating over the year, against the yearly target pro-rated from 1 January to today.",
    kind: "gauge",
};
const UNIT_INFO: Family = Family {
    name: "tally_unit_info",
    help: "A unit of the organisation tree.",
    kind: "gauge",
};
const INDICATOR_INFO: Family = Family {
    name: "tally_indicator_info",
    help: "An indicator of the catalogue.",
    kind: "gauge",
};
const SOURCE_UP: Family = Family {
    name: "tally_source_up",
    help: "1 if the source's last run succeeded.",
    kind: "gauge",
};
/// The `kind` label values of `tally_source_runs_total{result="error"}`:
/// the plugin's error kinds, `unknown` for a kind newer than this daemon and
/// `protocol` for an answer that broke the protocol. A fixed list, so that
/// the label's cardinality is bounded and every series exists from the start.
pub const ERROR_KINDS: [&str; 8] = [
    "settings",
    "auth",
    "upstream",
    "rate_limited",
    "data",
    "internal",
    "unknown",
    "protocol",
];

const RUNS_TOTAL: Family = Family {
    name: "tally_source_runs_total",
    help: "Collection runs by result; runs with result error also by the kind of error.",
    kind: "counter",
};
const LAST_SUCCESS: Family = Family {
    name: "tally_source_last_success_timestamp_seconds",
    help: "Unix time of the source's last successful run.",
    kind: "gauge",
};
const RUN_DURATION: Family = Family {
    name: "tally_source_run_duration_seconds",
    help: "Duration of collection runs.",
    kind: "histogram",
};
/// The same family without its buckets (`[metrics]
/// source_duration_histogram = false`, the default): `_sum` and `_count`
/// only, which Prometheus' format calls a summary without quantiles. Queries
/// of `_sum` and `_count` read both alike.
const RUN_DURATION_SUM: Family = Family {
    kind: "summary",
    ..RUN_DURATION
};
const OBSERVATIONS_WRITTEN: Family = Family {
    name: "tally_observations_written_total",
    help: "Observations written to the store.",
    kind: "counter",
};
const SKIPPED_RUNS: Family = Family {
    name: "tally_source_skipped_runs_total",
    help: "Scheduled runs skipped because the previous run of the source was still going.",
    kind: "counter",
};
const BACKOFF_SKIPS: Family = Family {
    name: "tally_source_backoff_skips_total",
    help: "Scheduled runs skipped because the source is backing off after consecutive failed runs.",
    kind: "counter",
};
const MISSED_RUNS: Family = Family {
    name: "tally_source_missed_runs_total",
    help: "Times a source was caught up because its schedule should have fired but did not (daemon down, clock jump, suspend).",
    kind: "counter",
};
const SCHEDULE_INTERVAL: Family = Family {
    name: "tally_source_schedule_interval_seconds",
    help: "The longest gap between two scheduled runs of the source: a source whose last success is older than twice this is stale.",
    kind: "gauge",
};
const PLUGIN_INFO: Family = Family {
    name: "tally_plugin_info",
    help: "A loaded plugin library.",
    kind: "gauge",
};
const FINGERPRINT_INFO: Family = Family {
    name: "tally_config_fingerprint_info",
    help: "The fingerprint of this replica's source configuration: replicas with the same one share every source.",
    kind: "gauge",
};
const NOT_CLAIMED: Family = Family {
    name: "tally_replica_sources_not_claimed",
    help: "Sources the shared database schedules that this replica does not claim: unknown to it, or configured otherwise.",
    kind: "gauge",
};
const REPORTS_LEASE: Family = Family {
    name: "tally_replica_reports_lease_held",
    help: "1 while this replica holds the lease of the quarterly reports (exactly one replica should).",
    kind: "gauge",
};
const BUILD_INFO: Family = Family {
    name: "tally_build_info",
    help: "The running tallyd.",
    kind: "gauge",
};

/// Upper bounds of `tally_source_run_duration_seconds` with their `le`
/// labels, written as Prometheus' own clients write them.
const DURATION_BUCKETS: [(f64, &str); 10] = [
    (0.01, "0.01"),
    (0.05, "0.05"),
    (0.1, "0.1"),
    (0.5, "0.5"),
    (1.0, "1"),
    (5.0, "5"),
    (10.0, "10"),
    (30.0, "30"),
    (60.0, "60"),
    (300.0, "300"),
];

/// The series budget of one source with the default `[metrics]`: what
/// README.md's Metrics table promises (10,000 sources, at most 150,000
/// series). Today's defaults write 14: `up`, five `runs_total`, the last
/// success, the duration's `_sum` and `_count`, four counters and the
/// schedule interval.
pub const SOURCE_SERIES_BUDGET: usize = 15;

/// What a source's series say, as plain numbers.
#[derive(Clone)]
struct SourceStats {
    /// The `source` and `plugin` label values, escaped once.
    source_label: Arc<str>,
    plugin_label: Arc<str>,
    plugin: Arc<str>,
    runs: [u64; RunResult::ALL.len()],
    /// Runs with result `error`, by [`ERROR_KINDS`]; they add up to the
    /// `error` entry of `runs`.
    error_kinds: [u64; ERROR_KINDS.len()],
    /// `None` until the first run: no `tally_source_up` series before.
    up: Option<bool>,
    /// When the run `up` says is the latest finished, in unix milliseconds
    /// (see `Metrics::set_source_states`).
    latest_run_ms: Option<i64>,
    last_success: Option<f64>,
    /// Runs per bucket (not cumulative); slower runs are only in the count.
    duration_buckets: [u64; DURATION_BUCKETS.len()],
    duration_sum: f64,
    duration_count: u64,
    written: u64,
    skipped: u64,
    backoff_skips: u64,
    missed: u64,
    schedule_interval: Option<f64>,
}

impl SourceStats {
    fn new(source: &str, plugin: &str) -> SourceStats {
        SourceStats {
            source_label: escaped(source).into(),
            plugin_label: escaped(plugin).into(),
            plugin: plugin.into(),
            runs: [0; RunResult::ALL.len()],
            error_kinds: [0; ERROR_KINDS.len()],
            up: None,
            latest_run_ms: None,
            last_success: None,
            duration_buckets: [0; DURATION_BUCKETS.len()],
            duration_sum: 0.0,
            duration_count: 0,
            written: 0,
            skipped: 0,
            backoff_skips: 0,
            missed: 0,
            schedule_interval: None,
        }
    }
}

/// Which optional per-source series are written (`[metrics]`, see
/// [`Metrics::configure`]): the rest of the series budget of a source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SourceDetail {
    /// The ten buckets of `tally_source_run_duration_seconds` (and `+Inf`).
    histogram: bool,
    /// `tally_source_runs_total{result="error"}` by `kind`, instead of one series.
    error_kinds: bool,
}

/// A source's numbers and its lines as last written.
struct SourceEntry {
    stats: SourceStats,
    /// Bumped by every update.
    version: u64,
    /// The lines of `version`, if written since.
    text: Option<Arc<SourceText>>,
}

/// One source's lines of every per-source family, one after the other:
/// family `f` is `text[ends[f - 1]..ends[f]]`. Kept between rebuilds, so a
/// rebuild writes only the sources that changed since and copies the rest.
struct SourceText {
    version: u64,
    detail: SourceDetail,
    text: String,
    ends: [usize; SOURCE_FAMILIES.len()],
}

impl SourceText {
    fn family(&self, f: usize) -> &str {
        let start = if f == 0 { 0 } else { self.ends[f - 1] };
        &self.text[start..self.ends[f]]
    }
}

/// What every handle of one [`Metrics`] shares.
struct Shared {
    /// By source id, so the body lists sources in a stable order.
    sources: Mutex<BTreeMap<String, SourceEntry>>,
    /// `tally_plugin_info` label values (plugin, version, abi).
    plugins: Mutex<BTreeSet<[String; 3]>>,
    /// The indicator families, as text.
    indicator_families: Mutex<Arc<String>>,
    /// What scrapes answer.
    body: RwLock<Arc<Body>>,
    /// The optional per-source series.
    detail: Mutex<SourceDetail>,
    /// Something changed since the last rebuild began.
    changed: AtomicBool,
    /// Observations were written since the indicator families were last
    /// computed: they need the store again.
    values_stale: AtomicBool,
    /// Wakes the background rebuild.
    wake: tokio::sync::Notify,
    /// Whose `tally_http_requests_total` the body carries ([`Metrics::count_http`]).
    http: Mutex<Option<Arc<HttpGate>>>,
    /// One rebuild at a time, so an older body never replaces a newer one.
    rebuild: Mutex<()>,
    /// The replica families, for a daemon that is one of several replicas.
    replica: Mutex<Option<ReplicaStats>>,
}

/// One rebuild's body, as the parts it is made of, and its plain text and
/// gzip copy once a scrape asked for them: all swapped in together, so a copy
/// is never of an older body.
///
/// The parts are shared, not copied: the indicator text and every source's
/// lines are kept between rebuilds anyway, so a rebuild holds pointers to
/// them (80 kB at 10,000 sources) instead of writing a second 18 MB text a
/// second. The text a scrape reads is made from them at most once per body.
struct Body {
    /// `tally_build_info`, `tally_plugin_info` and the replica families.
    head: String,
    indicators: Arc<String>,
    sources: Vec<Arc<SourceText>>,
    /// The per-source families in [`SOURCE_FAMILIES`] order, with the
    /// duration family as `[metrics]` asks; `None` for a family no source
    /// has a line of (left out, as Prometheus' clients leave it out).
    families: [Option<&'static Family>; SOURCE_FAMILIES.len()],
    /// `tally_http_requests_total`.
    tail: String,
    /// The length of the text, in bytes.
    len: usize,
    text: OnceLock<Bytes>,
    gzip: OnceLock<Bytes>,
}

impl Body {
    fn empty() -> Body {
        Body {
            head: String::new(),
            indicators: Arc::default(),
            sources: Vec::new(),
            families: [None; SOURCE_FAMILIES.len()],
            tail: String::new(),
            len: 0,
            text: OnceLock::new(),
            gzip: OnceLock::new(),
        }
    }

    /// Every piece of the text in order, each passed to `out`.
    fn pieces(&self, mut out: impl FnMut(&[u8])) {
        out(self.head.as_bytes());
        out(self.indicators.as_bytes());
        for (f, family) in self.families.iter().enumerate() {
            let Some(family) = family else {
                continue;
            };
            for piece in family_header(family) {
                out(piece.as_bytes());
            }
            for source in &self.sources {
                out(source.family(f).as_bytes());
            }
        }
        out(self.tail.as_bytes());
    }

    /// The plain text, put together now if it was not yet.
    fn text(&self) -> Bytes {
        self.text
            .get_or_init(|| {
                let mut text = Vec::with_capacity(self.len);
                self.pieces(|piece| text.extend_from_slice(piece));
                debug_assert_eq!(text.len(), self.len);
                Bytes::from(text)
            })
            .clone()
    }

    /// The gzip copy, compressed now if it was not yet: from the parts, in
    /// 64 kB slices, without putting the plain text together.
    fn gzip(&self) -> Bytes {
        self.gzip
            .get_or_init(|| {
                if let Some(text) = self.text.get() {
                    return gzip(text);
                }
                use std::io::Write as _;
                const SLICE: usize = 64 * 1024;
                let mut encoder = gzip_encoder(self.len);
                let mut slice = Vec::with_capacity(SLICE);
                self.pieces(|piece| {
                    if slice.len() + piece.len() > SLICE {
                        // Writing into a Vec cannot fail.
                        let _ = encoder.write_all(&slice);
                        slice.clear();
                    }
                    if piece.len() >= SLICE {
                        let _ = encoder.write_all(piece);
                    } else {
                        slice.extend_from_slice(piece);
                    }
                });
                let _ = encoder.write_all(&slice);
                gzip_finish(encoder)
            })
            .clone()
    }
}

/// The gzip level of `/metrics`: 1, the fastest. On a 30 MB exposition
/// (10,000 sources) the higher levels took several times longer for a few
/// per cent less (docs/operating.md, "Sizing /metrics"); the text of the
/// exposition, long runs of the same label names, compresses about 10× at
/// level 1 already.
const GZIP_LEVEL: u32 = 1;

/// `text` gzip-compressed.
fn gzip(text: &[u8]) -> Bytes {
    use std::io::Write as _;
    let mut encoder = gzip_encoder(text.len());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(text);
    gzip_finish(encoder)
}

/// An encoder for a text of `len` bytes, its output sized for the ratio the
/// exposition compresses at.
fn gzip_encoder(len: usize) -> flate2::write::GzEncoder<Vec<u8>> {
    flate2::write::GzEncoder::new(
        Vec::with_capacity(len / 8 + 64),
        flate2::Compression::new(GZIP_LEVEL),
    )
}

fn gzip_finish(encoder: flate2::write::GzEncoder<Vec<u8>>) -> Bytes {
    let mut out = encoder.finish().unwrap_or_default();
    out.shrink_to_fit();
    Bytes::from(out)
}

/// What the replica families say ([`Metrics::set_replica`]).
#[derive(Debug, Clone, Default, PartialEq)]
struct ReplicaStats {
    fingerprint: String,
    not_claimed: usize,
    reports_lease: bool,
}

impl Shared {
    /// Marks the body out of date and wakes the background rebuild (only on
    /// the first change since the last rebuild: 1,000 runs a second cost
    /// one wake-up, not 1,000).
    fn touch(&self) {
        if !self.changed.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// Updates one registered source's numbers. A source that is not
    /// registered (removed by a reload while its last run went on) is left
    /// out rather than brought back.
    fn update(&self, source: &str, f: impl FnOnce(&mut SourceStats)) {
        if let Some(entry) = lock(&self.sources).get_mut(source) {
            f(&mut entry.stats);
            entry.version += 1;
            self.touch();
        }
    }
}

/// Locks `m`, taking the data of a poisoned lock as it is.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Every series of the README's Metrics table and the daemon's own. Shared as an
/// `Arc<Metrics>` by the engines before and after a reload, so counters
/// continue.
pub struct Metrics {
    shared: Arc<Shared>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let shared = Arc::new(Shared {
            sources: Mutex::new(BTreeMap::new()),
            plugins: Mutex::new(BTreeSet::new()),
            indicator_families: Mutex::default(),
            body: RwLock::new(Arc::new(Body::empty())),
            detail: Mutex::new(SourceDetail::default()),
            changed: AtomicBool::new(false),
            values_stale: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            rebuild: Mutex::new(()),
            http: Mutex::new(None),
            replica: Mutex::new(None),
        });
        let metrics = Metrics { shared };
        metrics.rebuild_body();
        metrics
    }

    /// Writes the optional per-source series that `[metrics]` asks for, from
    /// the next rebuild on (every source's lines are written again if this
    /// changes them).
    pub fn configure(&self, config: &tally_config::MetricsConfig) {
        let detail = SourceDetail {
            histogram: config.source_duration_histogram,
            error_kinds: config.source_error_kinds,
        };
        let mut current = lock(&self.shared.detail);
        if *current != detail {
            *current = detail;
            drop(current);
            self.shared.touch();
        }
    }

    /// Exports `tally_http_requests_total` as counted by `gate` (the daemon's
    /// gate of plugins' HTTP), from the next rebuild on.
    pub fn count_http(&self, gate: Arc<HttpGate>) {
        *lock(&self.shared.http) = Some(gate);
    }

    /// Exports a source's series before its first run, every result at zero,
    /// so that `rate()` and `increase()` see a zero before the first failure.
    /// A source registered again (a reload) keeps its numbers; if its plugin
    /// changed, the series labelled with the plugin (runs, up) start again,
    /// as they are other series.
    pub fn register_source(&self, source: &str, plugin: &str) {
        let mut sources = lock(&self.shared.sources);
        match sources.get_mut(source) {
            Some(entry) if &*entry.stats.plugin == plugin => return,
            Some(entry) => {
                let stats = &mut entry.stats;
                stats.plugin = plugin.into();
                stats.plugin_label = escaped(plugin).into();
                stats.runs = [0; RunResult::ALL.len()];
                stats.error_kinds = [0; ERROR_KINDS.len()];
                stats.up = None;
                stats.latest_run_ms = None;
                entry.version += 1;
            }
            None => {
                let entry = SourceEntry {
                    stats: SourceStats::new(source, plugin),
                    version: 0,
                    text: None,
                };
                sources.insert(source.to_owned(), entry);
            }
        }
        drop(sources);
        self.shared.touch();
    }

    /// Removes a source's series (a source removed by a reload): they would
    /// otherwise stay in `/metrics` forever, frozen at their last value, and
    /// look like a source that stopped working. The mirror of
    /// [`Metrics::register_source`]; a late update of the source is ignored.
    pub fn forget_source(&self, source: &str, _plugin: &str) {
        if lock(&self.shared.sources).remove(source).is_some() {
            self.shared.touch();
        }
    }

    /// Records a finished run; `kind` is what the plugin reported, for a
    /// run with result `error`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_finished(
        &self,
        source: &str,
        _plugin: &str,
        result: RunResult,
        kind: Option<ErrorKind>,
        seconds: f64,
        written: usize,
        finished_unix: f64,
    ) {
        let r = RunResult::ALL
            .iter()
            .position(|x| *x == result)
            .unwrap_or_default();
        let k = error_kind_label(result, kind)
            .and_then(|label| ERROR_KINDS.iter().position(|x| *x == label));
        self.shared.update(source, |s| {
            s.runs[r] += 1;
            if let Some(k) = k {
                s.error_kinds[k] += 1;
            }
            if let Some(b) = DURATION_BUCKETS.iter().position(|(le, _)| seconds <= *le) {
                s.duration_buckets[b] += 1;
            }
            s.duration_sum += seconds;
            s.duration_count += 1;
            s.written += written as u64;
            let up = matches!(result, RunResult::Success);
            s.up = Some(up);
            s.latest_run_ms = Some((finished_unix * 1000.0) as i64);
            if up {
                s.last_success = Some(finished_unix);
            }
        });
    }

    /// A scheduled run skipped because the source was still running:
    /// `tally_source_skipped_runs_total`.
    pub fn run_skipped(&self, source: &str) {
        self.shared.update(source, |s| s.skipped += 1);
    }

    /// A scheduled run skipped while the source backs off:
    /// `tally_source_backoff_skips_total`.
    pub fn backoff_skipped(&self, source: &str) {
        self.shared.update(source, |s| s.backoff_skips += 1);
    }

    /// A schedule that fired with no run, caught up once:
    /// `tally_source_missed_runs_total`.
    pub fn run_missed(&self, source: &str) {
        self.shared.update(source, |s| s.missed += 1);
    }

    /// `tally_source_last_success_timestamp_seconds`, e.g. from the store at start.
    pub fn set_last_success(&self, source: &str, unix: f64) {
        self.shared.update(source, |s| s.last_success = Some(unix));
    }

    /// `tally_source_schedule_interval_seconds`.
    pub fn set_schedule_interval(&self, source: &str, seconds: f64) {
        self.shared
            .update(source, |s| s.schedule_interval = Some(seconds));
    }

    /// `tally_plugin_info`: a series per loaded library. Libraries are never
    /// unloaded, so series are only added.
    pub fn plugin_loaded(&self, plugin: &str, version: &str, abi: &str) {
        let labels = [plugin.to_owned(), version.to_owned(), abi.to_owned()];
        if lock(&self.shared.plugins).insert(labels) {
            self.shared.touch();
        }
    }

    /// Exports the replica families from now on, with this configuration
    /// fingerprint (see `crate::claims`).
    pub fn set_replica(&self, fingerprint: &str) {
        let mut replica = lock(&self.shared.replica);
        let stats = replica.get_or_insert_with(Default::default);
        if stats.fingerprint != fingerprint {
            stats.fingerprint = fingerprint.to_owned();
            self.shared.touch();
        }
    }

    /// `tally_replica_sources_not_claimed`.
    pub fn set_replica_not_claimed(&self, sources: usize) {
        if let Some(stats) = lock(&self.shared.replica).as_mut()
            && stats.not_claimed != sources
        {
            stats.not_claimed = sources;
            self.shared.touch();
        }
    }

    /// `tally_replica_reports_lease_held`.
    pub fn set_reports_lease(&self, held: bool) {
        if let Some(stats) = lock(&self.shared.replica).as_mut()
            && stats.reports_lease != held
        {
            stats.reports_lease = held;
            self.shared.touch();
        }
    }

    /// Observations were written: the indicator families are recomputed
    /// from the store at the next rebuild.
    pub fn values_changed(&self) {
        self.shared.values_stale.store(true, Ordering::Release);
        self.shared.touch();
    }

    /// Replaces the indicator families (text written by [`IndicatorText`]);
    /// scrapes see them after the next rebuild.
    pub fn set_indicator_families(&self, text: IndicatorText) {
        let mut text = text.out;
        // Kept until observations are written again: without the spare room
        // of its growth, and not copied into another allocation.
        text.shrink_to_fit();
        *lock(&self.shared.indicator_families) = Arc::new(text);
        self.shared.touch();
    }

    /// Resolves when something changed since the last rebuild began (at
    /// once if it already had).
    pub async fn changed(&self) {
        if self.shared.changed.load(Ordering::Acquire) {
            return;
        }
        self.shared.wake.notified().await;
    }

    /// Rebuilds the body if anything changed since the last rebuild began,
    /// or always with `force`. `update_values` recomputes the indicator
    /// families (calling [`Metrics::set_indicator_families`]); it runs first
    /// when observations were written since, or with `force`. Blocking:
    /// reads the store through `update_values`. One refresh runs at a time.
    /// Returns whether the body was rebuilt.
    pub fn refresh(&self, force: bool, update_values: impl FnOnce()) -> bool {
        let _one = lock(&self.shared.rebuild);
        // Cleared before reading, so a change made while this rebuild reads
        // marks the body out of date again rather than being lost.
        let changed = self.shared.changed.swap(false, Ordering::AcqRel);
        let stale = self.shared.values_stale.swap(false, Ordering::AcqRel);
        if force || stale {
            update_values();
            // Its own mark is covered by this rebuild.
            self.shared.changed.store(false, Ordering::Release);
        }
        if force || stale || changed {
            self.rebuild_body();
            return true;
        }
        false
    }

    /// The latest body: what `GET /metrics` answers, never encoded on the
    /// way. Put together now if no scrape did yet (once per body, whoever
    /// asks first): blocking, a copy of some 18 MB at 10,000 sources.
    pub fn exposition(&self) -> Bytes {
        self.body().text()
    }

    /// The latest body's text if a scrape put it together already; `None`
    /// leaves that to [`Metrics::exposition`].
    pub fn exposition_ready(&self) -> Option<Bytes> {
        self.body().text.get().cloned()
    }

    /// The latest body's gzip copy if a scrape made it already; `None`
    /// leaves its compression to [`Metrics::exposition_gzip`], which blocks.
    pub fn exposition_gzip_ready(&self) -> Option<Bytes> {
        self.body().gzip.get().cloned()
    }

    /// The latest body's gzip copy, compressed now if it was not yet (once
    /// per body, whoever asks first: scrapes arriving meanwhile wait for it
    /// and share it). Blocking: some 20 ms for the body of 10,000 sources.
    pub fn exposition_gzip(&self) -> Bytes {
        self.body().gzip()
    }

    fn body(&self) -> Arc<Body> {
        self.shared
            .body
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Rebuilds the body now, with the indicator families as last set.
    pub fn rebuild(&self) {
        let _one = lock(&self.shared.rebuild);
        self.shared.changed.store(false, Ordering::Release);
        self.rebuild_body();
    }

    /// [`Metrics::rebuild`], and the body as text: for tests.
    pub fn encode(&self) -> String {
        self.rebuild();
        String::from_utf8_lossy(&self.exposition()).into_owned()
    }

    fn rebuild_body(&self) {
        let detail = *lock(&self.shared.detail);
        let sources = self.source_texts(detail);
        let plugins = lock(&self.shared.plugins).clone();
        let indicators = lock(&self.shared.indicator_families).clone();
        let mut head = String::new();
        write_build_info(&mut head);
        write_plugin_info(&mut head, &plugins);
        if let Some(replica) = lock(&self.shared.replica).clone() {
            write_replica(&mut head, &replica);
        }
        let mut families = [None; SOURCE_FAMILIES.len()];
        for (f, family) in SOURCE_FAMILIES.iter().enumerate() {
            let family = if f == RUN_DURATION_AT && !detail.histogram {
                &RUN_DURATION_SUM
            } else {
                family
            };
            if sources.iter().any(|s| !s.family(f).is_empty()) {
                families[f] = Some(family);
            }
        }
        let mut tail = String::new();
        if let Some(gate) = lock(&self.shared.http).clone() {
            write_http_requests(&mut tail, &gate);
        }
        let mut body = Body {
            head,
            indicators,
            sources,
            families,
            tail,
            len: 0,
            text: OnceLock::new(),
            gzip: OnceLock::new(),
        };
        // Counted from the pieces the text is made of, so that the two agree.
        let mut len = 0;
        body.pieces(|piece| len += piece.len());
        body.len = len;
        *self
            .shared
            .body
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(body);
    }

    /// Every source's lines, in id order: those written by an earlier
    /// rebuild as they are, the others written now. The numbers are copied
    /// out under the lock and written without it, so runs finishing meanwhile
    /// do not wait for the text.
    fn source_texts(&self, detail: SourceDetail) -> Vec<Arc<SourceText>> {
        let mut texts = Vec::new();
        let mut todo = Vec::new();
        for (id, entry) in lock(&self.shared.sources).iter() {
            match &entry.text {
                Some(text) if text.version == entry.version && text.detail == detail => {
                    texts.push(Some(text.clone()))
                }
                _ => {
                    todo.push((texts.len(), id.clone(), entry.version, entry.stats.clone()));
                    texts.push(None);
                }
            }
        }
        let written: Vec<(String, Arc<SourceText>)> = todo
            .into_iter()
            .map(|(at, id, version, stats)| {
                let text = Arc::new(write_source(&stats, version, detail));
                texts[at] = Some(text.clone());
                (id, text)
            })
            .collect();
        let mut sources = lock(&self.shared.sources);
        for (id, text) in written {
            // Kept only if the source did not change while it was written.
            if let Some(entry) = sources.get_mut(&id)
                && entry.version == text.version
            {
                entry.text = Some(text);
            }
        }
        texts.into_iter().flatten().collect()
    }
}

/// Writes the indicator families: each method writes one whole family, so
/// a family's samples stay together as the format requires. Series without
/// a value are simply not written.
pub struct IndicatorText {
    out: String,
}

impl Default for IndicatorText {
    fn default() -> Self {
        Self::new()
    }
}

impl IndicatorText {
    pub fn new() -> IndicatorText {
        IndicatorText { out: String::new() }
    }

    /// `tally_unit_info{unit, name, parent}`, from `(unit, name, parent)`;
    /// a root's parent is `""`.
    pub fn unit_info<'a>(&mut self, units: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) {
        let mut f = FamilyWriter::start(&mut self.out, &UNIT_INFO);
        for (unit, name, parent) in units {
            f.sample(&[("name", name), ("parent", parent), ("unit", unit)], 1.0);
        }
        f.end();
    }

    /// `tally_indicator_info{indicator, name, kind}`, from `(indicator, name, kind)`.
    pub fn indicator_info<'a>(
        &mut self,
        indicators: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) {
        let mut f = FamilyWriter::start(&mut self.out, &INDICATOR_INFO);
        for (indicator, name, kind) in indicators {
            f.sample(
                &[("indicator", indicator), ("kind", kind), ("name", name)],
                1.0,
            );
        }
        f.end();
    }

    /// `tally_indicator_value{unit, indicator, window}`, from
    /// `(unit, indicator, window, value)`.
    pub fn indicator_value<'a>(
        &mut self,
        samples: impl IntoIterator<Item = (&'a str, &'a str, &'a str, f64)>,
    ) {
        self.per_window(&INDICATOR_VALUE, samples);
    }

    /// `tally_target_ratio{unit, indicator, window}`, from
    /// `(unit, indicator, window, ratio)`.
    pub fn target_ratio<'a>(
        &mut self,
        samples: impl IntoIterator<Item = (&'a str, &'a str, &'a str, f64)>,
    ) {
        self.per_window(&TARGET_RATIO, samples);
    }

    fn per_window<'a>(
        &mut self,
        family: &Family,
        samples: impl IntoIterator<Item = (&'a str, &'a str, &'a str, f64)>,
    ) {
        let mut f = FamilyWriter::start(&mut self.out, family);
        for (unit, indicator, window, value) in samples {
            f.sample(
                &[("indicator", indicator), ("unit", unit), ("window", window)],
                value,
            );
        }
        f.end();
    }
}

/// Writes one family: `# HELP` and `# TYPE`, then its samples; a family
/// without samples is taken back out (as Prometheus' clients leave out a
/// family without series).
struct FamilyWriter<'a> {
    out: &'a mut String,
    family: &'a Family,
    start: usize,
    samples: usize,
}

/// A family's `# HELP` and `# TYPE` lines, in pieces.
fn family_header(family: &Family) -> [&str; 10] {
    [
        "# HELP ",
        family.name,
        " ",
        family.help,
        "\n",
        "# TYPE ",
        family.name,
        " ",
        family.kind,
        "\n",
    ]
}

impl<'a> FamilyWriter<'a> {
    fn start(out: &'a mut String, family: &'a Family) -> FamilyWriter<'a> {
        let start = out.len();
        for piece in family_header(family) {
            out.push_str(piece);
        }
        FamilyWriter {
            out,
            family,
            start,
            samples: 0,
        }
    }

    /// A sample of the family itself; `labels` in the order to write them.
    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.sample_of("", labels, value);
    }

    /// A sample of a series of the family: `suffix` is `_bucket`, `_sum`, ...
    fn sample_of(&mut self, suffix: &str, labels: &[(&str, &str)], value: f64) {
        self.samples += 1;
        let out = &mut *self.out;
        out.push_str(self.family.name);
        out.push_str(suffix);
        for (i, (name, value)) in labels.iter().enumerate() {
            out.push(if i == 0 { '{' } else { ',' });
            out.push_str(name);
            out.push_str("=\"");
            push_escaped(out, value);
            out.push('"');
        }
        if !labels.is_empty() {
            out.push('}');
        }
        out.push(' ');
        push_value(out, value);
        out.push('\n');
    }

    fn end(self) {
        if self.samples == 0 {
            self.out.truncate(self.start);
        }
    }
}

#[derive(Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

fn write_build_info(out: &mut String) {
    let mut f = FamilyWriter::start(out, &BUILD_INFO);
    f.sample(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    f.end();
}

fn write_plugin_info(out: &mut String, plugins: &BTreeSet<[String; 3]>) {
    let mut f = FamilyWriter::start(out, &PLUGIN_INFO);
    for [plugin, version, abi] in plugins {
        f.sample(
            &[("abi", abi), ("plugin", plugin), ("version", version)],
            1.0,
        );
    }
    f.end();
}

fn write_replica(out: &mut String, replica: &ReplicaStats) {
    let mut f = FamilyWriter::start(out, &FINGERPRINT_INFO);
    f.sample(&[("fingerprint", &replica.fingerprint)], 1.0);
    f.end();
    let mut f = FamilyWriter::start(out, &NOT_CLAIMED);
    f.sample(&[], replica.not_claimed as f64);
    f.end();
    let mut f = FamilyWriter::start(out, &REPORTS_LEASE);
    f.sample(&[], if replica.reports_lease { 1.0 } else { 0.0 });
    f.end();
}

/// The position of `tally_source_run_duration_seconds` in [`SOURCE_FAMILIES`].
const RUN_DURATION_AT: usize = 3;

/// The per-source families, in the order they are written.
const SOURCE_FAMILIES: [&Family; 9] = [
    &SOURCE_UP,
    &RUNS_TOTAL,
    &LAST_SUCCESS,
    &RUN_DURATION,
    &OBSERVATIONS_WRITTEN,
    &SKIPPED_RUNS,
    &BACKOFF_SKIPS,
    &MISSED_RUNS,
    &SCHEDULE_INTERVAL,
];

/// A source's lines of every family of [`SOURCE_FAMILIES`]. Label values
/// were escaped at registration; labels are in the order Prometheus' clients
/// write them (sorted, `le` last).
fn write_source(s: &SourceStats, version: u64, detail: SourceDetail) -> SourceText {
    let mut out = String::with_capacity(2048 + 27 * s.source_label.len());
    let mut ends = [0; SOURCE_FAMILIES.len()];
    let (source, plugin) = (&*s.source_label, &*s.plugin_label);
    if let Some(up) = s.up {
        let parts = [
            "tally_source_up{plugin=\"",
            plugin,
            "\",source=\"",
            source,
            "\"} ",
        ];
        line(&mut out, &parts, Value::Int(u64::from(up)));
    }
    ends[0] = out.len();
    for (result, n) in RunResult::ALL.iter().zip(s.runs) {
        if *result == RunResult::Error && detail.error_kinds {
            for (kind, n) in ERROR_KINDS.iter().zip(s.error_kinds) {
                let parts = [
                    "tally_source_runs_total{kind=\"",
                    kind,
                    "\",plugin=\"",
                    plugin,
                    "\",result=\"error\",source=\"",
                    source,
                    "\"} ",
                ];
                line(&mut out, &parts, Value::Int(n));
            }
            continue;
        }
        let parts = [
            "tally_source_runs_total{plugin=\"",
            plugin,
            "\",result=\"",
            result.as_str(),
            "\",source=\"",
            source,
            "\"} ",
        ];
        line(&mut out, &parts, Value::Int(n));
    }
    ends[1] = out.len();
    if let Some(t) = s.last_success {
        line(
            &mut out,
            &[LAST_SUCCESS.name, "{source=\"", source, "\"} "],
            Value::Float(t),
        );
    }
    ends[2] = out.len();
    let count = Value::Int(s.duration_count);
    if detail.histogram {
        let mut cumulative = 0;
        for ((_, le), n) in DURATION_BUCKETS.iter().zip(s.duration_buckets) {
            cumulative += n;
            let parts = [
                "tally_source_run_duration_seconds_bucket{source=\"",
                source,
                "\",le=\"",
                le,
                "\"} ",
            ];
            line(&mut out, &parts, Value::Int(cumulative));
        }
        let inf = [
            "tally_source_run_duration_seconds_bucket{source=\"",
            source,
            "\",le=\"+Inf\"} ",
        ];
        line(&mut out, &inf, count);
    }
    let sum = [
        "tally_source_run_duration_seconds_sum{source=\"",
        source,
        "\"} ",
    ];
    line(&mut out, &sum, Value::Float(s.duration_sum));
    let n = [
        "tally_source_run_duration_seconds_count{source=\"",
        source,
        "\"} ",
    ];
    line(&mut out, &n, count);
    ends[3] = out.len();
    let counters = [
        (&OBSERVATIONS_WRITTEN, s.written),
        (&SKIPPED_RUNS, s.skipped),
        (&BACKOFF_SKIPS, s.backoff_skips),
        (&MISSED_RUNS, s.missed),
    ];
    for (f, (family, n)) in counters.into_iter().enumerate() {
        line(
            &mut out,
            &[family.name, "{source=\"", source, "\"} "],
            Value::Int(n),
        );
        ends[4 + f] = out.len();
    }
    if let Some(gap) = s.schedule_interval {
        let parts = [SCHEDULE_INTERVAL.name, "{source=\"", source, "\"} "];
        line(&mut out, &parts, Value::Float(gap));
    }
    ends[8] = out.len();
    // Kept until the source changes: 10,000 of them are a copy of the body.
    out.shrink_to_fit();
    SourceText {
        version,
        detail,
        text: out,
        ends,
    }
}

/// `{parts}{value}\n`, the labels in `parts` already escaped.
fn line(out: &mut String, parts: &[&str], value: Value) {
    for p in parts {
        out.push_str(p);
    }
    match value {
        Value::Int(v) => push_u64(out, v),
        Value::Float(v) => push_value(out, v),
    }
    out.push('\n');
}

/// `tally_http_requests_total`, counted by the plugin host where requests
/// are made; at most 64 hosts × a few status classes, so prometheus' own
/// encoder is cheap enough here.
fn write_http_requests(out: &mut String, gate: &HttpGate) {
    let families: Vec<_> = gate
        .requests
        .collect()
        .into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect();
    // Cannot fail: the family has a name, a type and at least one series.
    let _ = TextEncoder::new().encode_utf8(&families, out);
}

/// A label value with `\`, `"` and line feeds escaped, as the text format
/// requires.
fn escaped(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    push_escaped(&mut out, value);
    out
}

fn push_escaped(out: &mut String, value: &str) {
    if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value as Prometheus parses it: `NaN`, `+Inf`, `-Inf`; whole
/// numbers below 2^53 as integers (`7`, not `7.0` or `7e0`; `-0` as `0`);
/// others in the shortest form that reads back the same number, with an
/// exponent only for very large or very small magnitudes.
fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
        if v < 0.0 {
            out.push('-');
        }
        push_u64(out, v.abs() as u64);
    } else if v.abs() >= 1e-4 && v.abs() < 1e16 {
        let _ = write!(out, "{v}");
    } else {
        let _ = write!(out, "{v:e}");
    }
}

fn push_u64(out: &mut String, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&digits[i..]).unwrap_or("0"));
}

#[cfg(test)]
mod tests;

/// The `kind` of a failed run, as the run record, the log, the API and the
/// metrics name it: the plugin's [`ErrorKind`] for a run that ended in an
/// error the plugin reported, `protocol` for one whose answer broke the
/// protocol, `None` for every other result (a timeout, panic or crash is its
/// own `result`).
pub fn error_kind_label(result: RunResult, kind: Option<ErrorKind>) -> Option<&'static str> {
    match (result, kind) {
        (RunResult::Error, Some(kind)) => Some(kind.as_str()),
        (RunResult::Error, None) => Some("protocol"),
        _ => None,
    }
}
