//! A plugin's settings schema turned into what operators read: an example
//! `[sources.settings]` table, the reference page `docs/plugins.md`, and the
//! problems of a source's settings at their place in the configuration file.

use std::fmt::Write as _;

use serde_json::Value;
use tally_plugin::Description;

use tally_config::{Config, Problem};

/// The problems of source `idx`'s settings against its plugin's schema, each
/// at its key in the file (an unknown key at its own line).
pub fn check_source(config: &Config, idx: usize, schema: &Value) -> Vec<Problem> {
    let Some(source) = config.sources.get(idx) else {
        return Vec::new();
    };
    tally_plugin::schema::validate(schema, &source.settings.value())
        .into_iter()
        .map(|p| Problem {
            location: config.settings_location(idx, &p.pointer),
            message: p.message,
        })
        .collect()
}

/// An example `[sources.settings]` table: required keys with an example
/// value, optional ones commented out with their default, each under its
/// description.
pub fn example(schema: &Value) -> String {
    let mut out = String::from("[sources.settings]\n");
    let root = Schema { root: schema };
    let object = root.resolve(schema);
    let required = required_of(object);
    for (key, sub, is_required) in ordered_properties(object, &required) {
        let sub_resolved = root.resolve(sub);
        if let Some(d) = description(sub).or_else(|| description(sub_resolved)) {
            for line in d.lines() {
                let _ = writeln!(out, "# {line}");
            }
        }
        let value = sub
            .get("examples")
            .and_then(|e| e.get(0))
            .or_else(|| sub.get("default").filter(|d| !d.is_null()))
            .cloned()
            .unwrap_or_else(|| root.placeholder(sub, 0));
        let shown = toml_inline(&value);
        let _ = writeln!(
            out,
            "{}{} = {shown}",
            if is_required { "" } else { "# " },
            toml_key(key)
        );
    }
    out
}

/// `docs/plugins.md`: each plugin's settings, generated from the schemas.
pub fn reference(plugins: &[&Description]) -> String {
    let mut out = String::from(
        "# Settings of the bundled plugins\n\n\
         Generated from the plugins' settings schemas by `tallyd plugins --settings-reference`\n\
         (a test regenerates it and fails when it differs). `tallyd check` validates each\n\
         source's `[sources.settings]` against the same schema before the plugin sees them;\n\
         `tallyd plugins --settings NAME` prints the schema itself and this example.\n",
    );
    for d in plugins {
        let _ = write!(out, "\n## `{}`\n\n{}\n", d.name, d.summary);
        let Some(schema) = &d.settings_schema else {
            out.push_str("\nThis plugin declares no settings schema.\n");
            continue;
        };
        let root = Schema { root: schema };
        out.push('\n');
        root.table(&mut out, root.resolve(schema));
        let mut defs: Vec<(&String, &Value)> = schema
            .get("$defs")
            .and_then(Value::as_object)
            .map(|m| m.iter().collect())
            .unwrap_or_default();
        defs.retain(|(_, v)| v.get("properties").is_some());
        for (name, def) in defs {
            let _ = write!(out, "\n`{name}`:\n\n");
            root.table(&mut out, def);
        }
        let _ = write!(out, "\n```toml\n{}```\n", example(schema));
    }
    out
}

struct Schema<'a> {
    root: &'a Value,
}

impl<'a> Schema<'a> {
    /// Follows `$ref` (and an `Option`'s `anyOf [X, null]`) to the schema of the value.
    fn resolve(&self, mut schema: &'a Value) -> &'a Value {
        for _ in 0..16 {
            if let Some(target) = schema
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix('#'))
                .and_then(|p| self.root.pointer(p))
            {
                schema = target;
                continue;
            }
            if let Some(Value::Array(branches)) = schema.get("anyOf") {
                let not_null: Vec<&Value> = branches
                    .iter()
                    .filter(|b| b.get("type").and_then(Value::as_str) != Some("null"))
                    .collect();
                if not_null.len() == 1 {
                    schema = not_null[0];
                    continue;
                }
            }
            break;
        }
        schema
    }

    /// A value of the schema's type for the example, when it gives none.
    fn placeholder(&self, schema: &Value, depth: usize) -> Value {
        let schema = self.resolve(schema);
        if let Some(v) = schema.get("examples").and_then(|e| e.get(0)) {
            return v.clone();
        }
        if let Some(v) = schema.get("default").filter(|d| !d.is_null()) {
            return v.clone();
        }
        if let Some(v) = constants(schema).into_iter().next() {
            return v;
        }
        if let Some(Value::Array(branches)) = schema.get("anyOf").or_else(|| schema.get("oneOf"))
            && let Some(first) = branches.first()
        {
            return self.placeholder(first, depth + 1);
        }
        if depth > 8 {
            return Value::String(String::new());
        }
        match first_type(schema) {
            Some("integer") => Value::from(0),
            Some("number") => Value::from(0.0),
            Some("boolean") => Value::Bool(false),
            Some("array") => match schema.get("items") {
                Some(items) => Value::Array(vec![self.placeholder(items, depth + 1)]),
                None => Value::Array(Vec::new()),
            },
            Some("object") => {
                let mut map = serde_json::Map::new();
                let required = required_of(schema);
                for (key, sub, is_required) in ordered_properties(schema, &required) {
                    if is_required {
                        map.insert(key.to_owned(), self.placeholder(sub, depth + 1));
                    }
                }
                Value::Object(map)
            }
            _ => Value::String("...".to_owned()),
        }
    }

    /// What the reference table says of a value's type.
    fn type_name(&self, schema: &Value) -> String {
        let resolved = self.resolve(schema);
        let named = schema
            .get("$ref")
            .or_else(|| {
                schema
                    .get("anyOf")
                    .and_then(Value::as_array)
                    .and_then(|b| b.iter().find_map(|b| b.get("$ref")))
            })
            .and_then(Value::as_str)
            .and_then(|r| r.rsplit('/').next())
            .filter(|_| resolved.get("properties").is_some());
        let consts = constants(resolved);
        if let Some(name) = named {
            format!("table `{name}`")
        } else if !consts.is_empty() {
            let shown: Vec<String> = consts.iter().map(|c| format!("`{c}`")).collect();
            shown.join(", ")
        } else if let Some(Value::Array(branches)) = resolved.get("anyOf") {
            let names: Vec<String> = branches.iter().map(|b| self.type_name(b)).collect();
            names.join(" or ")
        } else {
            match first_type(resolved) {
                Some("array") => format!(
                    "array of {}",
                    resolved
                        .get("items")
                        .map(|i| self.type_name(i))
                        .unwrap_or_else(|| "values".to_owned())
                ),
                Some("object") => match resolved.get("additionalProperties") {
                    Some(v @ Value::Object(_)) => format!("table of {}", self.type_name(v)),
                    _ => "table".to_owned(),
                },
                Some(t) => t.to_owned(),
                None => "any".to_owned(),
            }
        }
    }

    fn table(&self, out: &mut String, object: &Value) {
        let required = required_of(object);
        let properties = ordered_properties(object, &required);
        if properties.is_empty() {
            out.push_str("No settings.\n");
            return;
        }
        out.push_str("| key | type | default | what |\n|---|---|---|---|\n");
        for (key, sub, is_required) in properties {
            let default = if is_required {
                "required".to_owned()
            } else {
                match sub.get("default") {
                    Some(Value::Null) | None => "none".to_owned(),
                    Some(v) => format!("`{}`", toml_inline(v)),
                }
            };
            let what = description(sub)
                .or_else(|| description(self.resolve(sub)))
                .unwrap_or_default()
                .replace('\n', " ")
                .replace('|', "\\|");
            let _ = writeln!(
                out,
                "| `{key}` | {} | {default} | {what} |",
                self.type_name(sub).replace('|', "\\|")
            );
        }
    }
}

fn required_of(object: &Value) -> Vec<&str> {
    object
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Required keys first, then the others, each group in the schema's order.
fn ordered_properties<'a>(object: &'a Value, required: &[&str]) -> Vec<(&'a str, &'a Value, bool)> {
    let Some(props) = object.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut list: Vec<(&str, &Value, bool)> = props
        .iter()
        .map(|(k, v)| (k.as_str(), v, required.contains(&k.as_str())))
        .collect();
    list.sort_by_key(|(_, _, r)| !*r);
    list
}

fn description(schema: &Value) -> Option<String> {
    schema
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn first_type(schema: &Value) -> Option<&str> {
    match schema.get("type")? {
        Value::String(t) => Some(t.as_str()),
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    }
}

/// The values an enum allows: its `enum`, or one `const` per `oneOf` branch.
fn constants(schema: &Value) -> Vec<Value> {
    if let Some(Value::Array(values)) = schema.get("enum") {
        return values.clone();
    }
    if let Some(Value::Array(branches)) = schema.get("oneOf")
        && branches
            .iter()
            .all(|b| b.get("const").is_some() || b.get("enum").is_some())
    {
        return branches.iter().flat_map(constants_of_branch).collect();
    }
    Vec::new()
}

fn constants_of_branch(branch: &Value) -> Vec<Value> {
    match (branch.get("const"), branch.get("enum")) {
        (Some(c), _) => vec![c.clone()],
        (None, Some(Value::Array(e))) => e.clone(),
        _ => Vec::new(),
    }
}

fn toml_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_owned()
    } else {
        toml_inline(&Value::String(key.to_owned()))
    }
}

/// A JSON value as an inline TOML value (`"x"`, `[1, 2]`, `{ a = "b" }`).
fn toml_inline(value: &Value) -> String {
    match value {
        Value::Null => "\"\"".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => toml::Value::String(s.clone()).to_string(),
        Value::Array(items) => {
            let shown: Vec<String> = items.iter().map(toml_inline).collect();
            format!("[{}]", shown.join(", "))
        }
        Value::Object(map) if map.is_empty() => "{}".to_owned(),
        Value::Object(map) => {
            let shown: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{} = {}", toml_key(k), toml_inline(v)))
                .collect();
            format!("{{ {} }}", shown.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "url": {"type": "string", "description": "The endpoint.", "examples": ["http://a/b"]},
                "days": {"type": ["integer", "null"], "default": null},
                "method": {"$ref": "#/$defs/Method", "default": "GET"},
                "values": {"type": "array", "items": {"$ref": "#/$defs/V"}, "default": []},
                "weird key": {"type": "boolean"}
            },
            "required": ["url", "weird key"],
            "additionalProperties": false,
            "$defs": {
                "Method": {"type": "string", "enum": ["GET", "POST"]},
                "V": {"type": "object", "properties": {"indicator": {"type": "string"}}, "required": ["indicator"]}
            }
        })
    }

    /// The example is TOML that reads back as settings the schema accepts
    /// once the commented lines are left out.
    #[test]
    fn example_is_valid_toml_and_valid_settings() {
        let text = example(&schema());
        assert_eq!(
            text,
            "[sources.settings]\n# The endpoint.\nurl = \"http://a/b\"\n\"weird key\" = false\n\
             # days = 0\n# method = \"GET\"\n# values = []\n"
        );
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        let settings = serde_json::to_value(&parsed["sources"]["settings"]).unwrap();
        assert!(tally_plugin::schema::validate(&schema(), &settings).is_empty());
        let uncommented = text.replace("# days", "days").replace("# method", "method");
        let parsed: toml::Table = toml::from_str(&uncommented).unwrap();
        let settings = serde_json::to_value(&parsed["sources"]["settings"]).unwrap();
        assert!(tally_plugin::schema::validate(&schema(), &settings).is_empty());
    }

    #[test]
    fn reference_lists_keys_types_and_nested_tables() {
        let mut d = Description::new("reads stats");
        d.name = "stats".to_owned();
        d.settings_schema = Some(schema());
        let page = reference(&[&d]);
        assert!(page.contains("## `stats`\n\nreads stats\n"), "{page}");
        assert!(
            page.contains("| `url` | string | required | The endpoint. |"),
            "{page}"
        );
        assert!(
            page.contains("| `method` | `\"GET\"`, `\"POST\"` | `\"GET\"` |"),
            "{page}"
        );
        assert!(
            page.contains("| `values` | array of table `V` | `[]` |"),
            "{page}"
        );
        assert!(page.contains("`V`:\n\n| key |"), "{page}");
    }
}
