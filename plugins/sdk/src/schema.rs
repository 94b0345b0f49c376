//! The JSON Schema of a plugin's settings, and the check of settings against it.
//!
//! A plugin derives the schema from its settings type with [`schemars`]
//! ([`Description::settings_schema`](crate::Description::settings_schema));
//! the daemon validates every source's `[sources.settings]` against it before
//! the plugin sees them, and the test kit does the same.
//!
//! [`validate`] understands the part of JSON Schema 2020-12 that `schemars`
//! emits for serde types: `type`, `properties`, `required`,
//! `additionalProperties`, `items`, `prefixItems`, `enum`, `const`, `anyOf`,
//! `oneOf`, `allOf`, `$ref` into `$defs` (or `definitions`), `minimum`,
//! `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `minItems`, `maxItems`,
//! `minLength`, `maxLength` and boolean schemas. Other keywords (`format`,
//! `pattern`, ...) are not checked: the plugin's own checks in `new` remain.
//! A full validator crate would pull in regex engines and URI resolution for
//! keywords settings types never produce.

use serde_json::Value;

/// One way in which settings disagree with the schema.
///
/// ```
/// use serde_json::json;
/// let schema = json!({
///     "type": "object",
///     "properties": {"url": {"type": "string"}, "days": {"type": "integer", "minimum": 0}},
///     "required": ["url"],
///     "additionalProperties": false
/// });
/// let problems = tally_plugin::schema::validate(&schema, &json!({"ulr": "x", "days": -1}));
/// let shown: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
/// assert_eq!(shown, [
///     "missing field `url`",
///     "days: -1 is less than the minimum 0",
///     "ulr: unknown field `ulr`, expected one of `days`, `url`",
/// ]);
/// assert_eq!(problems[2].pointer, "/ulr");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaProblem {
    /// Where, as a JSON Pointer into the settings (`/values/0/pth`); empty for
    /// the settings themselves. The daemon turns it into a file, line and key.
    pub pointer: String,
    pub message: String,
}

impl SchemaProblem {
    /// The place as a settings path, `values[0].pth`, the way plugins name
    /// settings in their own errors; empty for the settings themselves.
    pub fn path(&self) -> String {
        let mut path = String::new();
        for token in self.pointer.split('/').skip(1) {
            let token = token.replace("~1", "/").replace("~0", "~");
            if token.parse::<usize>().is_ok() {
                path.push_str(&format!("[{token}]"));
            } else {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&token);
            }
        }
        path
    }
}

impl std::fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path();
        if path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{path}: {}", self.message)
        }
    }
}

/// Every problem of `value` against `schema`, in the order of the schema's
/// properties (missing fields first, unknown keys last); empty when it is valid.
pub fn validate(schema: &Value, value: &Value) -> Vec<SchemaProblem> {
    let mut problems = Vec::new();
    Validator { root: schema }.check(schema, value, "", &mut problems, 0);
    problems
}

/// Guards against a `$ref` cycle that never reaches a value.
const MAX_DEPTH: usize = 64;

struct Validator<'a> {
    root: &'a Value,
}

impl<'a> Validator<'a> {
    fn resolve(&self, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        self.root.pointer(pointer)
    }

    fn check(
        &self,
        schema: &'a Value,
        value: &Value,
        at: &str,
        out: &mut Vec<SchemaProblem>,
        depth: usize,
    ) {
        let problem = |message: String| SchemaProblem {
            pointer: at.to_owned(),
            message,
        };
        let schema = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                out.push(problem("no value is accepted here".to_owned()));
                return;
            }
            Value::Object(map) => map,
            _ => return,
        };
        if depth > MAX_DEPTH {
            return;
        }
        if let Some(Value::String(reference)) = schema.get("$ref") {
            match self.resolve(reference) {
                Some(target) => self.check(target, value, at, out, depth + 1),
                None => out.push(problem(format!(
                    "the plugin's schema refers to {reference}, which it does not define"
                ))),
            }
        }
        if let Some(Value::Array(all)) = schema.get("allOf") {
            for sub in all {
                self.check(sub, value, at, out, depth + 1);
            }
        }
        for keyword in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = schema.get(keyword) {
                self.check_any(branches, value, at, out, depth);
            }
        }
        if let Some(expected) = schema.get("type") {
            let names: Vec<&str> = match expected {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !names.is_empty() && !names.iter().any(|t| has_type(value, t)) {
                out.push(problem(format!(
                    "invalid type: {}, expected {}",
                    describe(value),
                    names.join(" or ")
                )));
                // The other keywords would only repeat the mismatch.
                return;
            }
        }
        if let Some(Value::Array(allowed)) = schema.get("enum")
            && !allowed.contains(value)
        {
            out.push(problem(not_one_of(value, allowed.iter())));
        }
        if let Some(constant) = schema.get("const")
            && constant != value
        {
            out.push(problem(format!("{value} is not {constant}")));
        }
        match value {
            Value::Object(map) => self.check_object(schema, map, at, out, depth),
            Value::Array(items) => self.check_array(schema, items, at, out, depth),
            Value::Number(n) => {
                if let Some(n) = n.as_f64() {
                    check_bounds(schema, n, &problem, out);
                }
            }
            Value::String(s) => {
                let len = s.chars().count() as f64;
                if let Some(min) = schema.get("minLength").and_then(Value::as_f64)
                    && len < min
                {
                    out.push(problem(format!("shorter than {min} characters")));
                }
                if let Some(max) = schema.get("maxLength").and_then(Value::as_f64)
                    && len > max
                {
                    out.push(problem(format!("longer than {max} characters")));
                }
            }
            _ => {}
        }
    }

    /// A value must match one of the branches (an `Option`, an untagged enum);
    /// when none does, the problems of the closest branch are the useful ones.
    fn check_any(
        &self,
        branches: &'a [Value],
        value: &Value,
        at: &str,
        out: &mut Vec<SchemaProblem>,
        depth: usize,
    ) {
        // An enum of documented variants: one `const` (or `enum`) per branch.
        let allowed: Vec<&Value> = branches
            .iter()
            .flat_map(|b| match (b.get("const"), b.get("enum")) {
                (Some(c), _) => vec![c],
                (None, Some(Value::Array(e))) => e.iter().collect(),
                _ => Vec::new(),
            })
            .collect();
        let only_constants = branches
            .iter()
            .all(|b| b.get("const").is_some() || b.get("enum").is_some());
        if only_constants {
            if !allowed.contains(&value) {
                out.push(SchemaProblem {
                    pointer: at.to_owned(),
                    message: not_one_of(value, allowed.iter().copied()),
                });
            }
            return;
        }
        let mut best: Option<Vec<SchemaProblem>> = None;
        let mut root_types = Vec::new();
        for branch in branches {
            let mut found = Vec::new();
            self.check(branch, value, at, &mut found, depth + 1);
            if found.is_empty() {
                return;
            }
            let mismatched_here = found.len() == 1
                && found[0].pointer == at
                && found[0].message.starts_with("invalid type:");
            if mismatched_here {
                if let Some((_, expected)) = found[0].message.split_once(", expected ") {
                    root_types.push(expected.to_owned());
                }
                continue;
            }
            if best.as_ref().is_none_or(|b| found.len() < b.len()) {
                best = Some(found);
            }
        }
        match best {
            Some(found) => out.extend(found),
            None => out.push(SchemaProblem {
                pointer: at.to_owned(),
                message: format!(
                    "invalid type: {}, expected {}",
                    describe(value),
                    if root_types.is_empty() {
                        "another value".to_owned()
                    } else {
                        root_types.join(" or ")
                    }
                ),
            }),
        }
    }

    fn check_object(
        &self,
        schema: &'a serde_json::Map<String, Value>,
        map: &serde_json::Map<String, Value>,
        at: &str,
        out: &mut Vec<SchemaProblem>,
        depth: usize,
    ) {
        let empty = serde_json::Map::new();
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(name) {
                    out.push(SchemaProblem {
                        pointer: at.to_owned(),
                        message: format!("missing field `{name}`"),
                    });
                }
            }
        }
        for (name, sub) in properties {
            if let Some(v) = map.get(name) {
                self.check(sub, v, &child(at, name), out, depth + 1);
            }
        }
        let additional = schema.get("additionalProperties");
        for (name, v) in map.iter().filter(|(k, _)| !properties.contains_key(*k)) {
            match additional {
                Some(Value::Bool(false)) => {
                    let known: Vec<String> = properties.keys().map(|k| format!("`{k}`")).collect();
                    out.push(SchemaProblem {
                        pointer: child(at, name),
                        message: match known.len() {
                            0 => format!("unknown field `{name}`, there are no fields"),
                            1 => format!("unknown field `{name}`, expected {}", known[0]),
                            _ => format!(
                                "unknown field `{name}`, expected one of {}",
                                known.join(", ")
                            ),
                        },
                    });
                }
                Some(sub) => self.check(sub, v, &child(at, name), out, depth + 1),
                None => {}
            }
        }
    }

    fn check_array(
        &self,
        schema: &'a serde_json::Map<String, Value>,
        items: &[Value],
        at: &str,
        out: &mut Vec<SchemaProblem>,
        depth: usize,
    ) {
        let len = items.len() as f64;
        if let Some(min) = schema.get("minItems").and_then(Value::as_f64)
            && len < min
        {
            out.push(SchemaProblem {
                pointer: at.to_owned(),
                message: format!("{len} items, at least {min} expected"),
            });
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_f64)
            && len > max
        {
            out.push(SchemaProblem {
                pointer: at.to_owned(),
                message: format!("{len} items, at most {max} expected"),
            });
        }
        // Tuples: `prefixItems` for the leading items, `items` for the rest.
        let prefix = schema
            .get("prefixItems")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        for (i, item) in items.iter().enumerate() {
            let sub = prefix.get(i).or_else(|| schema.get("items"));
            if let Some(sub) = sub {
                self.check(sub, item, &child(at, &i.to_string()), out, depth + 1);
            }
        }
    }
}

fn check_bounds(
    schema: &serde_json::Map<String, Value>,
    n: f64,
    problem: &dyn Fn(String) -> SchemaProblem,
    out: &mut Vec<SchemaProblem>,
) {
    let bound = |k: &str| schema.get(k).and_then(Value::as_f64);
    if let Some(min) = bound("minimum")
        && n < min
    {
        out.push(problem(format!("{n} is less than the minimum {min}")));
    }
    if let Some(max) = bound("maximum")
        && n > max
    {
        out.push(problem(format!("{n} is more than the maximum {max}")));
    }
    if let Some(min) = bound("exclusiveMinimum")
        && n <= min
    {
        out.push(problem(format!("{n} must be more than {min}")));
    }
    if let Some(max) = bound("exclusiveMaximum")
        && n >= max
    {
        out.push(problem(format!("{n} must be less than {max}")));
    }
}

/// As serde says it of an enum's variants when they are all names
/// (``unknown variant `latin1`, expected one of `auto`, `utf-8` ``), so that
/// the schema and the plugin word the same mistake the same way.
fn not_one_of<'v>(value: &Value, allowed: impl Iterator<Item = &'v Value>) -> String {
    let allowed: Vec<&Value> = allowed.collect();
    match value {
        Value::String(v) if allowed.iter().all(|a| a.is_string()) => {
            let names: Vec<String> = allowed
                .iter()
                .filter_map(|a| a.as_str())
                .map(|a| format!("`{a}`"))
                .collect();
            match names.len() {
                1 => format!("unknown variant `{v}`, expected {}", names[0]),
                _ => format!(
                    "unknown variant `{v}`, expected one of {}",
                    names.join(", ")
                ),
            }
        }
        _ => {
            let shown: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
            format!("{value} is not one of {}", shown.join(", "))
        }
    }
}

fn child(at: &str, token: &str) -> String {
    format!("{at}/{}", token.replace('~', "~0").replace('/', "~1"))
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => match value {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        _ => true,
    }
}

/// A value as serde names it in its own errors: `string "x"`, `integer 3`.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) if n.is_i64() || n.is_u64() => format!("integer `{n}`"),
        Value::Number(n) => format!("floating point `{n}`"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "sequence".to_owned(),
        Value::Object(_) => "map".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Settings {
        url: String,
        #[serde(default)]
        days: Option<u32>,
        #[serde(default)]
        values: Vec<Value_>,
        #[serde(default)]
        method: Method,
        #[serde(default)]
        id: Option<Id>,
    }

    #[derive(Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Value_ {
        indicator: String,
        path: String,
    }

    #[derive(Deserialize, schemars::JsonSchema, Default)]
    #[allow(dead_code)]
    enum Method {
        /// Documented variants become `oneOf` with one `const` each.
        #[default]
        #[serde(rename = "GET")]
        Get,
        #[serde(rename = "POST")]
        Post,
    }

    #[derive(Deserialize, schemars::JsonSchema)]
    #[serde(untagged)]
    #[allow(dead_code)]
    enum Id {
        Number(u64),
        Text(String),
    }

    fn problems(value: Value) -> Vec<String> {
        let schema = schemars::schema_for!(Settings).to_value();
        validate(&schema, &value)
            .iter()
            .map(|p| format!("{} {}", p.pointer, p.message))
            .collect()
    }

    /// Whatever serde accepts, the schema accepts, and the other way round,
    /// on the shapes settings use (options, nested tables, enums, untagged).
    #[test]
    fn agrees_with_serde_on_settings_shapes() {
        let cases = [
            json!({"url": "http://a"}),
            json!({"url": "http://a", "days": 3, "method": "POST", "id": 12}),
            json!({"url": "http://a", "days": null, "id": "abc"}),
            json!({"url": "http://a", "values": [{"indicator": "x", "path": "$.x"}]}),
            json!({"url": "http://a", "values": [{"indicator": "x", "pth": "$.x"}]}),
            json!({"url": "http://a", "days": -1}),
            json!({"url": "http://a", "days": "3"}),
            json!({"url": "http://a", "method": "PUT"}),
            json!({"url": "http://a", "id": [1]}),
            json!({"url": 3}),
            json!({"ulr": "http://a"}),
            json!([]),
        ];
        for case in cases {
            let serde_ok = serde_json::from_value::<Settings>(case.clone()).is_ok();
            let schema_ok = problems(case.clone()).is_empty();
            assert_eq!(serde_ok, schema_ok, "{case}: {:?}", problems(case.clone()));
        }
    }

    #[test]
    fn names_each_problem_at_its_place() {
        assert_eq!(
            problems(json!({"url": "http://a", "values": [{"indicator": "x", "pth": "$.x"}]})),
            [
                "/values/0 missing field `path`",
                "/values/0/pth unknown field `pth`, expected one of `indicator`, `path`"
            ]
        );
        assert_eq!(
            problems(json!({"url": "http://a", "days": "3"})),
            ["/days invalid type: string \"3\", expected integer or null"]
        );
        assert_eq!(
            problems(json!({"url": "http://a", "method": "PUT"})),
            ["/method unknown variant `PUT`, expected one of `POST`, `GET`"]
        );
        assert_eq!(
            problems(json!({"url": "http://a", "id": [1]})),
            ["/id invalid type: sequence, expected integer or string or null"]
        );
    }

    #[test]
    fn paths_read_as_plugins_name_settings() {
        let p = SchemaProblem {
            pointer: "/values/0/a~1b".to_owned(),
            message: "m".to_owned(),
        };
        assert_eq!(p.path(), "values[0].a/b");
        assert_eq!(p.to_string(), "values[0].a/b: m");
    }

    #[test]
    fn a_reference_cycle_ends() {
        let schema = json!({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}});
        assert!(validate(&schema, &json!(1)).is_empty());
    }
}
