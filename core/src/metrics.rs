//! The Prometheus series of PRODUCT.md, in one registry.
//!
//! Every internal event that has a metric updates it here, next to nothing
//! else, so names and labels stay in one place. Label values are bounded: unit,
//! indicator, source and plugin ids come from the configuration, results from
//! a fixed list.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::store::RunResult;

pub struct Metrics {
    registry: Registry,
    pub indicator_value: GaugeVec,
    pub target_ratio: GaugeVec,
    pub unit_info: GaugeVec,
    pub indicator_info: GaugeVec,
    pub source_up: GaugeVec,
    pub runs_total: IntCounterVec,
    pub last_success: GaugeVec,
    pub run_duration: HistogramVec,
    pub observations_written: IntCounterVec,
    pub skipped_runs: IntCounterVec,
    pub backoff_skips: IntCounterVec,
    pub missed_runs: IntCounterVec,
    pub schedule_interval: GaugeVec,
    pub plugin_info: GaugeVec,
    pub build_info: GaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c =
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let indicator_value = gauge(
            "tally_indicator_value",
            "Value of an indicator for a unit (its own plus its descendants'), for the current period to date.",
            &["unit", "indicator", "window"],
        );
        let target_ratio = gauge(
            "tally_target_ratio",
            "Value over pro-rated target (per-unit targets) or share of entities on target (per-entity targets), current period to date.",
            &["unit", "indicator", "window"],
        );
        let unit_info = gauge(
            "tally_unit_info",
            "A unit of the organisation tree.",
            &["unit", "name", "parent"],
        );
        let indicator_info = gauge(
            "tally_indicator_info",
            "An indicator of the catalogue.",
            &["indicator", "name", "kind"],
        );
        let source_up = gauge(
            "tally_source_up",
            "1 if the source's last run succeeded.",
            &["source", "plugin"],
        );
        let runs_total = counter(
            "tally_source_runs_total",
            "Collection runs by result.",
            &["source", "plugin", "result"],
        );
        let last_success = gauge(
            "tally_source_last_success_timestamp_seconds",
            "Unix time of the source's last successful run.",
            &["source"],
        );
        let run_duration = HistogramVec::new(
            HistogramOpts::new(
                "tally_source_run_duration_seconds",
                "Duration of collection runs.",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
            &["source"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(run_duration.clone()))
            .expect("metric registered once");
        let observations_written = counter(
            "tally_observations_written_total",
            "Observations written to the store.",
            &["source"],
        );
        let skipped_runs = counter(
            "tally_source_skipped_runs_total",
            "Scheduled runs skipped because the previous run of the source was still going.",
            &["source"],
        );
        let backoff_skips = counter(
            "tally_source_backoff_skips_total",
            "Scheduled runs skipped because the source is backing off after consecutive failed runs.",
            &["source"],
        );
        let missed_runs = counter(
            "tally_source_missed_runs_total",
            "Times a source was caught up because its schedule should have fired but did not (daemon down, clock jump, suspend).",
            &["source"],
        );
        // Counted by the plugin host, where the requests are made.
        registry
            .register(Box::new(crate::plugin_host::HTTP_REQUESTS.clone()))
            .expect("metric registered once");
        let schedule_interval = gauge(
            "tally_source_schedule_interval_seconds",
            "The longest gap between two scheduled runs of the source: a source whose last success is older than twice this is stale.",
            &["source"],
        );
        let plugin_info = gauge(
            "tally_plugin_info",
            "A loaded plugin library.",
            &["plugin", "version", "abi"],
        );
        let build_info = gauge("tally_build_info", "The running tallyd.", &["version"]);
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        Metrics {
            registry,
            indicator_value,
            target_ratio,
            unit_info,
            indicator_info,
            source_up,
            runs_total,
            last_success,
            run_duration,
            observations_written,
            skipped_runs,
            backoff_skips,
            missed_runs,
            schedule_interval,
            plugin_info,
            build_info,
        }
    }

    /// Exports a source's series before its first run, every result at zero,
    /// so that `rate()` and `increase()` see a zero before the first failure.
    pub fn register_source(&self, source: &str, plugin: &str) {
        for result in RunResult::ALL {
            self.runs_total
                .with_label_values(&[source, plugin, result.as_str()])
                .inc_by(0);
        }
        self.observations_written
            .with_label_values(&[source])
            .inc_by(0);
        self.skipped_runs.with_label_values(&[source]).inc_by(0);
        self.backoff_skips.with_label_values(&[source]).inc_by(0);
        self.missed_runs.with_label_values(&[source]).inc_by(0);
        let _ = self.run_duration.with_label_values(&[source]);
    }

    /// Removes a source's series (a source removed by a reload): they would
    /// otherwise stay in `/metrics` forever, frozen at their last value, and
    /// look like a source that stopped working. The mirror of
    /// [`Metrics::register_source`]: a series added there is removed here.
    pub fn forget_source(&self, source: &str, plugin: &str) {
        let _ = self.source_up.remove_label_values(&[source, plugin]);
        for result in RunResult::ALL {
            let _ = self
                .runs_total
                .remove_label_values(&[source, plugin, result.as_str()]);
        }
        for per_source in [&self.last_success, &self.schedule_interval] {
            let _ = per_source.remove_label_values(&[source]);
        }
        for per_source in [
            &self.observations_written,
            &self.skipped_runs,
            &self.backoff_skips,
            &self.missed_runs,
        ] {
            let _ = per_source.remove_label_values(&[source]);
        }
        let _ = self.run_duration.remove_label_values(&[source]);
    }

    /// Records a finished run.
    pub fn run_finished(
        &self,
        source: &str,
        plugin: &str,
        result: RunResult,
        seconds: f64,
        written: usize,
        finished_unix: f64,
    ) {
        self.runs_total
            .with_label_values(&[source, plugin, result.as_str()])
            .inc();
        self.run_duration
            .with_label_values(&[source])
            .observe(seconds);
        self.observations_written
            .with_label_values(&[source])
            .inc_by(written as u64);
        let up = matches!(result, RunResult::Success);
        self.source_up
            .with_label_values(&[source, plugin])
            .set(if up { 1.0 } else { 0.0 });
        if up {
            self.last_success
                .with_label_values(&[source])
                .set(finished_unix);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = encoder.encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
