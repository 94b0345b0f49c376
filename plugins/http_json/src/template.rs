//! The `{from}`, `{to}` and `{day}` placeholders of `url`, `body`, `headers`
//! and `query`, parsed once at creation so that a typo is a settings error.

use chrono::NaiveDate;
use chrono::format::{Item, StrftimeItems};
use tally_plugin::Error;

/// The dates a request is made for.
pub struct Dates {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// The requested day, with `per_day`.
    pub day: Option<NaiveDate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    From,
    To,
    Day,
}

#[derive(Debug)]
enum Piece {
    Text(String),
    Var(Var, Option<String>),
}

/// A setting's text with its placeholders.
#[derive(Debug)]
pub struct Template {
    raw: String,
    pieces: Vec<Piece>,
}

/// Checks a chrono format, naming the setting.
pub fn check_format(setting: &str, format: &str) -> Result<(), Error> {
    if format.is_empty() || StrftimeItems::new(format).any(|i| matches!(i, Item::Error)) {
        return Err(Error::settings(format!(
            "{setting}: invalid chrono format {format:?} (e.g. \"%Y%m%d\")"
        )));
    }
    Ok(())
}

impl Template {
    /// Parses `text`. Only `{from}`, `{to}`, `{day}` and their `{name:FORMAT}`
    /// forms are placeholders; any other brace (a JSON body) is literal text.
    pub fn parse(setting: &str, text: &str, per_day: bool) -> Result<Template, Error> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            match placeholder(after) {
                Some((var, format, len)) => {
                    if let Some(f) = &format {
                        check_format(setting, f)?;
                    }
                    if var == Var::Day && !per_day {
                        return Err(Error::settings(format!(
                            "{setting}: {{day}} needs per_day = true (use {{from}} and {{to}} for the window)"
                        )));
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Var(var, format));
                    rest = &after[len..];
                }
                None => {
                    literal.push('{');
                    rest = after;
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template {
            raw: text.to_owned(),
            pieces,
        })
    }

    pub fn render(&self, dates: &Dates) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(var, format) => {
                    let date = match var {
                        Var::From => dates.from,
                        Var::To => dates.to,
                        // `parse` refuses `{day}` without per_day, which always sets it.
                        Var::Day => dates.day.unwrap_or(dates.to),
                    };
                    let format = format.as_deref().unwrap_or("%Y-%m-%d");
                    out.push_str(&date.format(format).to_string());
                }
            }
        }
        out
    }

    /// The text before any query string, for messages.
    pub fn display_base(&self) -> &str {
        self.raw.split('?').next().unwrap_or(&self.raw)
    }
}

/// After a `{`: the variable, its format and the length up to and including `}`.
fn placeholder(after: &str) -> Option<(Var, Option<String>, usize)> {
    let (var, name_len) = [("from", Var::From), ("to", Var::To), ("day", Var::Day)]
        .into_iter()
        .find(|(name, _)| after.starts_with(name))
        .map(|(name, var)| (var, name.len()))?;
    let rest = &after[name_len..];
    if rest.starts_with('}') {
        return Some((var, None, name_len + 1));
    }
    let format = rest.strip_prefix(':')?;
    let close = format.find('}')?;
    Some((
        var,
        Some(format[..close].to_owned()),
        name_len + 1 + close + 1,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, day).unwrap()
    }

    #[test]
    fn renders_placeholders_and_leaves_json_braces() {
        let t = Template::parse(
            "body",
            r#"{"start":"{from}","end":"{to:%Y%m%d}","day":"{day}","x":{"to":1}}"#,
            true,
        )
        .unwrap();
        let dates = Dates {
            from: d(1),
            to: d(27),
            day: Some(d(3)),
        };
        assert_eq!(
            t.render(&dates),
            r#"{"start":"2026-11-01","end":"20261127","day":"2026-11-03","x":{"to":1}}"#
        );
    }

    #[test]
    fn refuses_day_without_per_day_and_bad_formats() {
        let e = Template::parse("query.d", "{day}", false).unwrap_err();
        assert!(e.message.starts_with("query.d: {day} needs per_day"), "{e}");
        let e = Template::parse("query.d", "{from:%Q}", false).unwrap_err();
        assert!(
            e.message.starts_with("query.d: invalid chrono format"),
            "{e}"
        );
    }
}
