//! Configuration fingerprints: what replicas compare to tell whether they
//! would run a source alike (see `crate::claims`).
//!
//! A source's fingerprint hashes everything a run of it depends on, as
//! resolved: its configuration (settings with their secrets), the daemon's
//! time zone, its plugin's name and version, the units it reports for (ids,
//! names, aliases) and the indicators it stores (ids, kinds, ranges). The
//! input is written as canonical JSON (object keys sorted) and hashed with
//! SHA-256, of which 16 hex digits are shown: a secret enters only through
//! that hash, never as text.

use std::collections::HashMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Engine, SourceRuntime};
use tally_config::SourceConfig;

/// The fingerprint of each source of an engine, and of them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprints {
    /// By source id.
    pub sources: HashMap<String, String>,
    /// Of the sorted (source, fingerprint) pairs: equal on two replicas
    /// exactly when they have the same sources configured alike.
    pub config: String,
}

impl Fingerprints {
    pub fn of(engine: &Engine) -> Fingerprints {
        let sources: HashMap<String, String> = engine
            .sources()
            .iter()
            .map(|s| (s.id().to_owned(), source_fingerprint(engine, s)))
            .collect();
        let mut pairs: Vec<(&String, &String)> = sources.iter().collect();
        pairs.sort();
        let mut all = String::new();
        for (id, print) in pairs {
            all.push_str(id);
            all.push('=');
            all.push_str(print);
            all.push('\n');
        }
        Fingerprints {
            config: digest(all.as_bytes()),
            sources,
        }
    }
}

fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn source_fingerprint(engine: &Engine, source: &SourceRuntime) -> String {
    // Every field named: a field added to SourceConfig does not compile
    // until it is sorted in here or left out with a reason.
    let SourceConfig {
        id,
        plugin,
        units,
        coverage,
        // schedule_text is what the schedule was parsed from.
        schedule: _,
        schedule_text,
        lookback_days,
        timeout,
        backfill_from,
        enabled,
        isolation,
        memory_limit_mb,
        retries,
        retry_backoff,
        breaker_after,
        indicators,
        settings,
    } = &*source.config;
    let stored: Vec<Value> = source
        .emitted_ids()
        .iter()
        .filter_map(|id| engine.config.indicators.iter().find(|i| &i.id == id))
        .map(|i| {
            json!({
                "id": i.id, "name": i.name, "kind": format!("{:?}", i.kind), "unit": i.unit,
                "min": i.min, "max": i.max, "accumulates": i.accumulates.is_some(),
            })
        })
        .collect();
    let input = json!({
        "id": id,
        "plugin": plugin,
        "plugin_version": source.instance.plugin.version,
        "units": units,
        "coverage": coverage.as_str(),
        "schedule": schedule_text,
        "timezone": engine.config.daemon.timezone.name(),
        "lookback_days": lookback_days,
        "timeout_ms": timeout.as_millis() as u64,
        "backfill_from": backfill_from,
        "enabled": enabled,
        "isolation": format!("{isolation:?}"),
        "memory_limit_mb": memory_limit_mb,
        "retries": retries,
        "retry_backoff_ms": retry_backoff.as_millis() as u64,
        "breaker_after": breaker_after,
        "indicators": indicators,
        "settings": settings,
        "scope": source.units,
        "stores": stored,
    });
    let mut text = String::new();
    canonical(&input, &mut text);
    digest(text.as_bytes())
}

/// `v` as JSON with every object's keys sorted, whatever order the map
/// keeps them in.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (n, k) in keys.into_iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[{"d":1,"c":2}],"x":"s"}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":"s","y":[{"c":2,"d":1}]},"b":1}"#).unwrap();
        let (mut ta, mut tb) = (String::new(), String::new());
        canonical(&a, &mut ta);
        canonical(&b, &mut tb);
        assert_eq!(ta, tb);
        assert_eq!(ta, r#"{"a":{"x":"s","y":[{"c":2,"d":1}]},"b":1}"#);
    }

    /// Settings are kept as JSON text now; a fingerprint's input must be
    /// the bytes it was when they were kept as a `Value`, or replicas of two
    /// versions would disown each other's sources during a rolling upgrade.
    #[test]
    fn settings_as_text_give_the_fingerprint_input_of_settings_as_a_value() {
        let value = json!({
            "url": "http://127.0.0.1:1/src/0.json",
            "values": [{"path": "$.a", "indicator": "reads"}],
            "scale": 0.30000000000000004, "tiny": 5e-324, "n": -7, "big": u64::MAX,
            "nested": {"b": [true, null], "a": "名"},
        });
        let settings = tally_config::Settings::from_value(&value);
        let (mut old, mut new) = (String::new(), String::new());
        canonical(&json!({"settings": value}), &mut old);
        canonical(&json!({"settings": settings}), &mut new);
        assert_eq!(new, old);
    }
}
