//! A source's `[sources.settings]`, kept as compact JSON text.
//!
//! Settings are what the plugin is created with, and the plugin receives them
//! as JSON text anyway; the daemon itself reads them only when it checks them
//! against the plugin's schema, places a problem, or computes a fingerprint.
//! Held as a `serde_json::Value` they cost a B-tree node per object (about
//! 630 bytes for a three-key table), which made them the largest holder of
//! heap at 10,000 sources; as text the same settings take their JSON length.

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// A source's settings as compact JSON (an object), secrets resolved.
/// Parsed on demand with [`Settings::value`]; changed through
/// [`Settings::set`]. `Debug` shows only the top-level keys, never a value.
///
/// ```
/// use serde_json::json;
/// use tally_config::Settings;
///
/// let mut s = Settings::from_value(&json!({"url": "http://x", "n": [1, 2]}));
/// assert_eq!(s.json(), r#"{"n":[1,2],"url":"http://x"}"#);
/// s.set("dir", json!("/srv/forms"));
/// assert_eq!(s.get("dir"), Some(json!("/srv/forms")));
/// assert_eq!(s.value()["n"][1], 2);
/// ```
#[derive(Clone)]
pub struct Settings(Box<RawValue>);

impl Settings {
    /// The settings of a source that has none: `{}`.
    pub fn empty() -> Settings {
        Settings::from_value(&Value::Object(serde_json::Map::new()))
    }

    /// `value` written as compact JSON: the very text `serde_json::to_string`
    /// gives, so the bytes a plugin receives are those it received when the
    /// daemon kept the `Value`.
    pub fn from_value(value: &Value) -> Settings {
        // Writing a `Value` cannot fail: its keys are strings and its
        // numbers finite.
        Settings(serde_json::value::to_raw_value(value).expect("a JSON value is written"))
    }

    /// The settings as JSON text, as the plugin is handed them.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// The settings parsed.
    pub fn value(&self) -> Value {
        // The text was written from a `Value` by serde_json, so it parses.
        serde_json::from_str(self.json()).unwrap_or(Value::Null)
    }

    /// The top-level setting `key`, parsed; `None` when it is not set.
    pub fn get(&self, key: &str) -> Option<Value> {
        match self.value() {
            Value::Object(mut map) => map.remove(key),
            _ => None,
        }
    }

    /// Sets the top-level setting `key` (the settings are an object).
    pub fn set(&mut self, key: &str, value: Value) {
        let mut all = self.value();
        if let Value::Object(map) = &mut all {
            map.insert(key.to_owned(), value);
            *self = Settings::from_value(&all);
        }
    }

    /// The top-level keys, in JSON order (sorted).
    pub fn keys(&self) -> Vec<String> {
        match self.value() {
            Value::Object(map) => map.into_iter().map(|(k, _)| k).collect(),
            _ => Vec::new(),
        }
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings::empty()
    }
}

/// Equal when the JSON texts are: both were written from a `Value` the same
/// way, so equal texts are equal settings and a changed setting changes the text.
impl PartialEq for Settings {
    fn eq(&self, other: &Settings) -> bool {
        self.json() == other.json()
    }
}

impl PartialEq<Value> for Settings {
    fn eq(&self, other: &Value) -> bool {
        self.value() == *other
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Settings hold resolved secrets: keys only.
        f.debug_tuple("Settings").field(&self.keys()).finish()
    }
}

/// Written as the JSON it holds: into JSON text verbatim, into a `Value`
/// (`serde_json::json!`, `to_value`) parsed.
impl Serialize for Settings {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Settings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Settings, D::Error> {
        // Through a `Value`: a `RawValue` cannot be read from the buffered
        // content of an internally tagged enum (the plugin host's frames),
        // and the text is then written the one way `from_value` writes it.
        Value::deserialize(deserializer).map(|v| Settings::from_value(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_is_what_serde_json_writes_and_parses_back_to_the_same_value() {
        let v = json!({
            "url": "http://127.0.0.1/x.json",
            "values": [{"indicator": "reads", "path": "$.a"}, {"path": "$.b", "indicator": "名"}],
            "n": -3, "big": u64::MAX, "f": 0.30000000000000004, "tiny": 5e-324,
            "huge": 1.7976931348623157e308, "t": true, "z": null, "e": {},
        });
        let s = Settings::from_value(&v);
        assert_eq!(s.json(), serde_json::to_string(&v).unwrap());
        assert_eq!(s.value(), v);
        assert_eq!(s, v);
        // Into a Value (as the fingerprint takes it) and into text (as the
        // plugin host's frame takes it) alike.
        assert_eq!(serde_json::to_value(&s).unwrap(), v);
        assert_eq!(
            serde_json::to_string(&json!({"s": s})).unwrap(),
            serde_json::to_string(&json!({"s": v})).unwrap()
        );
        let back: Settings = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn set_get_keys_and_debug_without_values() {
        let mut s = Settings::empty();
        assert_eq!(s.json(), "{}");
        s.set("secret", json!("hunter2"));
        s.set("dir", json!("/a"));
        s.set("dir", json!("/b"));
        assert_eq!(s.get("dir"), Some(json!("/b")));
        assert_eq!(s.get("nope"), None);
        assert_eq!(s.keys(), ["dir", "secret"]);
        let shown = format!("{s:?}");
        assert_eq!(shown, r#"Settings(["dir", "secret"])"#);
        assert!(!shown.contains("hunter2"));
        assert_ne!(s, Settings::empty());
    }
}
