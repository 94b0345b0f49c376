//! `http_json`: reads counts from any JSON API and maps values to indicators
//! with JSONPath (RFC 9535).
//!
//! ```toml
//! [sources.settings]
//! url = "http://127.0.0.1:9471/api/stats"
//! method = "GET"                                  # or "POST", with body = "..."
//! headers = { Authorization = "Bearer ${env:TOKEN}" }
//! query = { start = "{from}", end = "{to:%Y%m%d}" }
//! per_day = false
//!
//! # Single values, for the source's own unit.
//! [[sources.settings.values]]
//! indicator = "wechat_followers"
//! path = "$.data.followers"
//!
//! # Rows: an array of per-day and/or per-unit objects.
//! [sources.settings.rows]
//! path = "$.data.rows[*]"
//! date = "date"
//! unit = "dept"
//! entity = "account"
//! [sources.settings.rows.fields]
//! portal_articles = "articles"
//! ```
//!
//! # Settings
//!
//! - `url` (required, `http://` or `https://`), `method` (`"GET"`, the
//!   default, or `"POST"`), `body` (POST only; sent with
//!   `Content-Type: application/json` unless `headers` sets one), `headers`
//!   and `query` (tables of strings).
//! - Placeholders in `url`, `body`, `headers` and `query` values: `{from}` and
//!   `{to}` (the window's ends) and `{day}` (only with `per_day = true`), as
//!   `YYYY-MM-DD`, or with a chrono format: `{from:%Y%m%d}`. Other braces, such
//!   as those of a JSON body, are left alone.
//! - `per_day` (default `false`): one request per day of the window instead of
//!   one for the whole window.
//! - `values`: a list of `{ indicator, path }`. The JSONPath must match at
//!   least one node (else the run fails, naming the path and URL); several
//!   matches are combined (summed, or the last one for a `level` indicator).
//!   The value is recorded for the source's unit on the window's last day, or
//!   on the requested day with `per_day`.
//! - `rows`: `path` selects the row objects (a path selecting one array reads
//!   its elements); `date`, `unit`, `entity` name a field of the row (a key, or
//!   a JSONPath relative to the row when it starts with `$`); `date_format`
//!   parses the date with a chrono format, otherwise `YYYY-MM-DD`, `YYYYMMDD`
//!   and `YYYY/MM/DD` are accepted (a time after the date is ignored);
//!   `fields` maps indicator ids to fields. Without `date` a row belongs to the
//!   window's last day (the requested day with `per_day`); without `unit` to
//!   the source's unit. Rows outside the window (with `per_day`: of another day
//!   than the one requested) are skipped. Rows with the same unit, indicator,
//!   entity and day are combined like several `values` matches.
//!
//! Values may be JSON numbers or numeric strings (`"1,234"`). Missing, `null`
//! and empty fields are skipped, not zero. A row with an unknown unit, a bad
//! date or a bad number is a warning naming the row index and the field; the
//! other rows are kept. Errors and warnings name the URL without its query
//! string, so tokens passed as query parameters stay out of logs. HTTP 401
//! and 403 are `auth` errors, 429 `rate_limited` (until the answer's
//! `Retry-After`, when it has one), any other status not 2xx `upstream`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json_path::JsonPath;
use tally_plugin::schemars::{self, JsonSchema};
use tally_plugin::{
    CollectRequest, CollectResponse, Description, Error, Host, HttpRequest, Kind, Observation,
    Plugin, body_snippet, check_indicator_id, export_plugin,
};

mod template;

use template::{Dates, Template};

/// `[sources.settings]` of an `http_json` source.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The endpoint, `http://` or `https://`; may hold `{from}`, `{to}`, `{day}` placeholders.
    #[schemars(extend("examples" = ["http://127.0.0.1:9471/api/stats"]))]
    pub url: String,
    /// `"GET"` or `"POST"`.
    #[serde(default)]
    pub method: Method,
    /// The POST body, sent as `application/json` unless `headers` sets a `Content-Type`.
    #[serde(default)]
    pub body: Option<String>,
    /// Request headers (values may be `${env:...}` secrets and hold placeholders).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Query parameters, e.g. `{ start = "{from}", end = "{to:%Y%m%d}" }`.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// One request per day of the window instead of one for the whole window.
    #[serde(default)]
    pub per_day: bool,
    /// Single values for the source's own unit, each `{ indicator, path }`.
    #[serde(default)]
    pub values: Vec<ValueSettings>,
    /// Rows: an array of per-day and/or per-unit objects.
    #[serde(default)]
    pub rows: Option<RowsSettings>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum Method {
    #[default]
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "POST")]
    Post,
}

/// One `[[sources.settings.values]]` entry.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueSettings {
    /// The indicator id the value is recorded as.
    #[schemars(extend("examples" = ["wechat_followers"]))]
    pub indicator: String,
    /// A JSONPath (RFC 9535) that must match at least one node; several matches are combined.
    #[schemars(extend("examples" = ["$.data.followers"]))]
    pub path: String,
}

/// `[sources.settings.rows]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RowsSettings {
    /// A JSONPath selecting the row objects (or one array, whose elements are the rows).
    #[schemars(extend("examples" = ["$.data.rows[*]"]))]
    pub path: String,
    /// The row's date field (a key, or a JSONPath from the row starting with `$`); default the window's last day.
    #[serde(default)]
    pub date: Option<String>,
    /// A chrono format for the date; default `YYYY-MM-DD`, `YYYYMMDD` or `YYYY/MM/DD`.
    #[serde(default)]
    pub date_format: Option<String>,
    /// The row's unit field (id, display name or alias); default the source's unit.
    #[serde(default)]
    pub unit: Option<String>,
    /// The row's entity field (an account, a staff member).
    #[serde(default)]
    pub entity: Option<String>,
    /// Indicator ids mapped to the row's fields.
    #[schemars(extend("examples" = [{"portal_articles": "articles"}]))]
    pub fields: BTreeMap<String, String>,
}

/// A configured `http_json` source.
pub struct HttpJson {
    url: Template,
    method: Method,
    body: Option<Template>,
    headers: Vec<(String, Template)>,
    query: Vec<(String, Template)>,
    has_content_type: bool,
    per_day: bool,
    values: Vec<ValueSpec>,
    rows: Option<RowsSpec>,
}

struct ValueSpec {
    setting: String,
    indicator: String,
    text: String,
    path: Arc<JsonPath>,
}

struct RowsSpec {
    text: String,
    path: Arc<JsonPath>,
    date: Option<Field>,
    date_format: Option<String>,
    unit: Option<Field>,
    entity: Option<Field>,
    fields: Vec<(String, Field)>,
}

/// A value of a row: a key of the row object, or a JSONPath relative to it.
struct Field {
    text: String,
    path: Option<Arc<JsonPath>>,
}

impl Field {
    fn parse(setting: &str, text: &str) -> Result<Field, Error> {
        let path = if text.starts_with('$') {
            Some(parse_path(setting, text)?)
        } else {
            None
        };
        Ok(Field {
            text: text.to_owned(),
            path,
        })
    }

    /// The field's value in `row`; `None` when absent or `null`.
    fn get<'a>(&self, row: &'a Value) -> Option<&'a Value> {
        let v = match &self.path {
            Some(p) => p.query(row).first(),
            None => row.get(&self.text),
        };
        v.filter(|v| !v.is_null())
    }
}

/// A JSONPath, parsed once per process and shared by every source that
/// writes it: sources of one platform pick the same paths, and a parsed
/// path is some 350 bytes (at 10,000 sources of three values, 10 MB when
/// each source held its own).
fn parse_path(setting: &str, text: &str) -> Result<Arc<JsonPath>, Error> {
    /// Parsed paths by text; `Weak`, so a path no source uses any more is
    /// freed, its entry pruned once the map has doubled.
    struct Parsed {
        paths: HashMap<String, Weak<JsonPath>>,
        prune_at: usize,
    }
    static PARSED: Mutex<Option<Parsed>> = Mutex::new(None);
    let mut guard = PARSED.lock().unwrap_or_else(|p| p.into_inner());
    let parsed = guard.get_or_insert_with(|| Parsed {
        paths: HashMap::new(),
        prune_at: 64,
    });
    if let Some(path) = parsed.paths.get(text).and_then(Weak::upgrade) {
        return Ok(path);
    }
    let path = Arc::new(
        JsonPath::parse(text)
            .map_err(|e| Error::settings(format!("{setting}: invalid JSONPath {text:?}: {e}")))?,
    );
    if parsed.paths.len() >= parsed.prune_at {
        parsed.paths.retain(|_, p| p.strong_count() > 0);
        parsed.prune_at = (2 * parsed.paths.len()).max(64);
    }
    parsed.paths.insert(text.to_owned(), Arc::downgrade(&path));
    Ok(path)
}

impl Plugin for HttpJson {
    const NAME: &'static str = "http_json";
    type Settings = Settings;

    fn describe() -> Description {
        Description::new("any JSON API, values picked by JSONPath").settings_schema::<Settings>()
    }

    fn new(s: Settings, _host: &Host) -> Result<Self, Error> {
        if !(s.url.starts_with("http://") || s.url.starts_with("https://")) {
            return Err(Error::settings(format!(
                "url: `{}` must start with http:// or https://",
                s.url
            )));
        }
        let per_day = s.per_day;
        let url = Template::parse("url", &s.url, per_day)?;
        let body = match (&s.body, s.method) {
            (Some(_), Method::Get) => {
                return Err(Error::settings(
                    "body: a body is only sent with method = \"POST\"",
                ));
            }
            (Some(b), Method::Post) => Some(Template::parse("body", b, per_day)?),
            (None, _) => None,
        };
        let headers = s
            .headers
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    Template::parse(&format!("headers.{k}"), v, per_day)?,
                ))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let query = s
            .query
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    Template::parse(&format!("query.{k}"), v, per_day)?,
                ))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let has_content_type = s
            .headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("content-type"));

        let mut values = Vec::new();
        for (i, v) in s.values.iter().enumerate() {
            check_indicator_id(&format!("values[{i}].indicator"), &v.indicator)?;
            values.push(ValueSpec {
                setting: format!("values[{i}].path"),
                indicator: v.indicator.clone(),
                text: v.path.clone(),
                path: parse_path(&format!("values[{i}].path"), &v.path)?,
            });
        }

        let rows = match &s.rows {
            None => None,
            Some(r) => {
                if r.fields.is_empty() {
                    return Err(Error::settings(
                        "rows.fields: name at least one indicator, e.g. portal_articles = \"articles\"",
                    ));
                }
                if let Some(f) = &r.date_format {
                    template::check_format("rows.date_format", f)?;
                    if r.date.is_none() {
                        return Err(Error::settings(
                            "rows.date_format: set rows.date, the field the format applies to",
                        ));
                    }
                }
                let opt = |name: &str, v: &Option<String>| {
                    v.as_deref()
                        .map(|t| Field::parse(&format!("rows.{name}"), t))
                        .transpose()
                };
                let mut fields = Vec::new();
                for (id, field) in &r.fields {
                    check_indicator_id(&format!("rows.fields.{id}"), id)?;
                    fields.push((
                        id.clone(),
                        Field::parse(&format!("rows.fields.{id}"), field)?,
                    ));
                }
                Some(RowsSpec {
                    text: r.path.clone(),
                    path: parse_path("rows.path", &r.path)?,
                    date: opt("date", &r.date)?,
                    date_format: r.date_format.clone(),
                    unit: opt("unit", &r.unit)?,
                    entity: opt("entity", &r.entity)?,
                    fields,
                })
            }
        };
        if values.is_empty() && rows.is_none() {
            return Err(Error::settings(
                "values, rows: set [[values]] (single values) or [rows] (an array of rows), or both",
            ));
        }

        Ok(HttpJson {
            url,
            method: s.method,
            body,
            headers,
            query,
            has_content_type,
            per_day,
            values,
            rows,
        })
    }

    fn emits(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        let all = self.values.iter().map(|v| &v.indicator);
        let all = all.chain(
            self.rows
                .iter()
                .flat_map(|r| r.fields.iter().map(|(id, _)| id)),
        );
        for id in all {
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        ids
    }

    fn collect(&mut self, req: &CollectRequest, host: &Host) -> Result<CollectResponse, Error> {
        let mut out = Output::new(req);
        if self.per_day {
            for day in req.window.days() {
                if host.cancelled() {
                    return Err(Error::upstream(format!(
                        "{}: cancelled before the request for {day}",
                        self.url.display_base()
                    )));
                }
                let dates = Dates {
                    from: req.window.from,
                    to: req.window.to,
                    day: Some(day),
                };
                self.fetch_and_read(req, host, &dates, day, true, &mut out)?;
            }
        } else {
            let dates = Dates {
                from: req.window.from,
                to: req.window.to,
                day: None,
            };
            self.fetch_and_read(req, host, &dates, req.window.to, false, &mut out)?;
        }
        for line in &out.debug {
            host.debug(line);
        }
        Ok(out.finish())
    }
}

impl HttpJson {
    fn fetch_and_read(
        &self,
        req: &CollectRequest,
        host: &Host,
        dates: &Dates,
        day: NaiveDate,
        only_day: bool,
        out: &mut Output,
    ) -> Result<(), Error> {
        let url = self.url.render(dates);
        let method = match self.method {
            Method::Get => "GET",
            Method::Post => "POST",
        };
        // Name the endpoint without its query string: tokens often travel there.
        let request_name = format!("{method} {}", url.split('?').next().unwrap_or(&url));
        let place = if only_day {
            format!("{request_name} (day {day})")
        } else {
            request_name.clone()
        };
        let mut request = HttpRequest::new(method, url);
        for (k, v) in &self.query {
            request = request.query(k, v.render(dates));
        }
        for (k, v) in &self.headers {
            request = request.header(k, v.render(dates));
        }
        if let Some(body) = &self.body {
            request.body = Some(body.render(dates));
            if !self.has_content_type {
                request = request.header("Content-Type", "application/json");
            }
        }

        let resp = host.http(&request).map_err(|e| {
            // The daemon's errors already name the request; say it once.
            let why = e
                .message
                .strip_prefix(&request_name)
                .and_then(|rest| rest.strip_prefix(": "))
                .unwrap_or(&e.message);
            Error::new(e.kind, format!("{place}: {why}"))
        })?;
        if !(200..300).contains(&resp.status) {
            let message = format!(
                "{place}: HTTP {}: {}",
                resp.status,
                body_snippet(&resp.body)
            );
            return Err(match resp.status {
                401 | 403 => Error::auth(message),
                429 => {
                    let limited = Error::rate_limited(message);
                    // The daemon waits for the platform's Retry-After.
                    match resp.retry_after(host.now()) {
                        Some(at) => limited.retry_after(at),
                        None => limited,
                    }
                }
                _ => Error::upstream(message),
            });
        }
        let json: Value = serde_json::from_str(&resp.body).map_err(|e| {
            Error::upstream(format!(
                "{place}: HTTP {}: the answer is not JSON ({e}): {}",
                resp.status,
                body_snippet(&resp.body)
            ))
        })?;

        for v in &self.values {
            let nodes = v.path.query(&json).all();
            if nodes.is_empty() {
                return Err(Error::upstream(format!(
                    "{place}: {} {:?} matched nothing in the answer",
                    v.setting, v.text
                )));
            }
            for node in nodes {
                let value = number(node).map_err(|why| {
                    Error::upstream(format!("{place}: {} {:?}: {why}", v.setting, v.text))
                })?;
                out.add(Observation::new(&v.indicator, day, value));
            }
        }

        if let Some(rows) = &self.rows {
            rows.read(req, &json, &place, day, only_day, out);
        }
        Ok(())
    }
}

impl RowsSpec {
    /// Reads the rows of one answer into `out`; problems of a row are warnings.
    fn read(
        &self,
        req: &CollectRequest,
        json: &Value,
        place: &str,
        day: NaiveDate,
        only_day: bool,
        out: &mut Output,
    ) {
        let mut nodes = self.path.query(json).all();
        if let [Value::Array(items)] = nodes.as_slice() {
            nodes = items.iter().collect();
        }
        let mut seen = vec![false; self.fields.len()];
        let mut skipped_outside = 0usize;
        for (i, row) in nodes.iter().enumerate() {
            if !row.is_object() {
                out.warn(format!(
                    "{place}: rows[{i}] (from rows.path {:?}) is not an object; row skipped",
                    self.text
                ));
                continue;
            }
            let row_day = match &self.date {
                None => day,
                Some(f) => match f
                    .get(row)
                    .map(|v| parse_day(v, self.date_format.as_deref()))
                {
                    Some(Some(d)) => d,
                    Some(None) => {
                        out.warn(format!(
                            "{place}: rows[{i}]: field {:?}: bad date {}; row skipped",
                            f.text,
                            f.get(row).map(short).unwrap_or_default()
                        ));
                        continue;
                    }
                    None => {
                        out.warn(format!(
                            "{place}: rows[{i}]: field {:?}: no date; row skipped",
                            f.text
                        ));
                        continue;
                    }
                },
            };
            if !req.window.contains(row_day) || (only_day && row_day != day) {
                skipped_outside += 1;
                continue;
            }
            let unit = match &self.unit {
                None => None,
                Some(f) => {
                    let text = f.get(row).map(text_of).unwrap_or_default();
                    match req.resolve_unit(&text) {
                        Some(id) => Some(id.to_owned()),
                        None if text.trim().is_empty() => {
                            out.warn(format!(
                                "{place}: rows[{i}]: field {:?}: no unit; row skipped",
                                f.text
                            ));
                            continue;
                        }
                        None => {
                            out.warn(format!(
                                "{place}: rows[{i}]: field {:?}: unknown unit {:?} (not a unit id, name or alias of this source); row skipped",
                                f.text, text
                            ));
                            continue;
                        }
                    }
                }
            };
            let entity = self
                .entity
                .as_ref()
                .and_then(|f| f.get(row))
                .map(text_of)
                .unwrap_or_default();
            for (k, (indicator, field)) in self.fields.iter().enumerate() {
                let Some(v) = field.get(row) else { continue };
                seen[k] = true;
                if v.as_str().is_some_and(|s| s.trim().is_empty()) {
                    continue;
                }
                match number(v) {
                    Ok(value) => {
                        let mut o = Observation::new(indicator, row_day, value).entity(&entity);
                        o.unit = unit.clone();
                        out.add(o);
                    }
                    Err(why) => out.warn(format!(
                        "{place}: rows[{i}]: field {:?} ({indicator}): {why}; value skipped",
                        field.text
                    )),
                }
            }
        }
        if !nodes.is_empty() {
            for (k, (indicator, field)) in self.fields.iter().enumerate() {
                if !seen[k] {
                    out.warn(format!(
                        "{place}: rows.fields.{indicator}: field {:?} is in none of the {} rows",
                        field.text,
                        nodes.len()
                    ));
                }
            }
        }
        if skipped_outside > 0 {
            out.debug.push(format!(
                "{place}: {skipped_outside} rows outside the requested days skipped"
            ));
        }
    }
}

/// The observations of a run, combined by key in first-seen order.
struct Output {
    levels: Vec<String>,
    index: HashMap<(Option<String>, String, String, NaiveDate), usize>,
    response: CollectResponse,
    debug: Vec<String>,
}

impl Output {
    fn new(req: &CollectRequest) -> Output {
        let levels = req
            .indicators
            .iter()
            .filter(|i| i.kind == Kind::Level)
            .map(|i| i.id.clone())
            .collect();
        Output {
            levels,
            index: HashMap::new(),
            response: CollectResponse::default(),
            debug: Vec::new(),
        }
    }

    /// Adds an observation; one with the same key as an earlier one is summed
    /// with it, or replaces it for a `level` indicator (the last value wins).
    fn add(&mut self, o: Observation) {
        let key = (o.unit.clone(), o.indicator.clone(), o.entity.clone(), o.day);
        match self.index.get(&key) {
            Some(&i) => {
                let old = &mut self.response.observations[i];
                if self.levels.contains(&o.indicator) {
                    old.value = o.value;
                } else {
                    old.value += o.value;
                }
            }
            None => {
                self.index.insert(key, self.response.observations.len());
                self.response.observations.push(o);
            }
        }
    }

    fn warn(&mut self, message: String) {
        self.response.warn(message);
    }

    fn finish(self) -> CollectResponse {
        self.response
    }
}

/// A JSON number or a numeric string (`"123"`, `"1,234"`, `" 12.5 "`).
fn number(v: &Value) -> Result<f64, String> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let cleaned: String = s.trim().chars().filter(|c| *c != ',').collect();
            cleaned.parse::<f64>().ok()
        }
        _ => None,
    };
    match n {
        Some(n) if n.is_finite() => Ok(n),
        _ => Err(format!("bad number {}", short(v))),
    }
}

/// A day from a string or number field: an explicit chrono format, else
/// `YYYY-MM-DD`, `YYYYMMDD` or `YYYY/MM/DD`, optionally followed by a time.
fn parse_day(v: &Value, format: Option<&str>) -> Option<NaiveDate> {
    let text = text_of(v);
    let text = text.trim();
    if let Some(f) = format {
        return NaiveDate::parse_from_str(text, f).ok().or_else(|| {
            chrono::NaiveDateTime::parse_from_str(text, f)
                .ok()
                .map(|dt| dt.date())
        });
    }
    let date_part = text.split(['T', ' ']).next().unwrap_or(text);
    ["%Y-%m-%d", "%Y%m%d", "%Y/%m/%d"]
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(date_part, f).ok())
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A value for a message, cut short.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

export_plugin!(HttpJson);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_writing_one_path_share_its_parse() {
        let a = parse_path("values[0].path", "$.shared_by_two[0].n").unwrap();
        let b = parse_path("values[1].path", "$.shared_by_two[0].n").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let other = parse_path("values[0].path", "$.shared_by_two[1].n").unwrap();
        assert!(!Arc::ptr_eq(&a, &other));
        // Freed with its last user, parsed again when needed again.
        drop((a, b));
        let again = parse_path("values[0].path", "$.shared_by_two[0].n").unwrap();
        assert_eq!(
            again
                .query(&serde_json::json!({"shared_by_two": [{"n": 4}]}))
                .all(),
            vec![&serde_json::json!(4)]
        );
        // An invalid path is still refused, naming the setting.
        let err = parse_path("rows.path", "$[").err().unwrap();
        assert!(
            err.to_string().contains("rows.path: invalid JSONPath"),
            "{err}"
        );
    }
}
