//! Crontab expressions, translated to what the `cron` crate understands.
//!
//! Operators write crontab: 5 fields (`min hour dom mon dow`), day-of-week 0–7 with
//! 0 and 7 = Sunday. The `cron` crate wants a leading seconds field and numbers
//! day-of-week 1–7 with 1 = Sunday. Passing crontab text straight through would run
//! `30 2 * * 1` on Sundays, so numeric day-of-week items are rewritten as explicit
//! lists in the crate's numbering; names (`MON-FRI`) mean the same in both and pass
//! through unchanged.

use std::str::FromStr;

use cron::Schedule;

/// Parses a 5-field crontab expression or a 6-field one with leading seconds.
pub(crate) fn parse(text: &str) -> Result<Schedule, String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let (seconds, rest) = match fields.len() {
        5 => ("0", &fields[..]),
        6 => (fields[0], &fields[1..]),
        n => {
            return Err(format!(
                "expected 5 fields (min hour dom mon dow) or 6 fields (sec min hour dom mon dow), found {n}"
            ));
        }
    };
    let (minute, hour, dom, month, dow) = (rest[0], rest[1], rest[2], rest[3], rest[4]);
    // Crontab runs a job when *either* a restricted day-of-month or a restricted
    // day-of-week matches; the cron crate requires both. Rather than silently run
    // less often than the operator expects, refuse the combination.
    if is_restricted(dom) && is_restricted(dow) {
        return Err(format!(
            "both day-of-month ({dom}) and day-of-week ({dow}) are restricted; crontab would run on either, \
             this scheduler only on both: restrict one of them and leave the other `*`"
        ));
    }
    let dow = translate_day_of_week(dow)?;
    let translated = format!("{seconds} {minute} {hour} {dom} {month} {dow}");
    Schedule::from_str(&translated).map_err(|e| e.to_string())
}

fn is_restricted(field: &str) -> bool {
    field != "*" && field != "?"
}

/// Rewrites crontab day-of-week numbering (0–7, 0 and 7 = Sunday) to the cron
/// crate's (1–7, 1 = Sunday).
fn translate_day_of_week(field: &str) -> Result<String, String> {
    if !field.bytes().any(|b| b.is_ascii_digit()) {
        // `*`, `?` and names need no translation.
        return Ok(field.to_owned());
    }
    let mut days = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        let step = match step {
            None => 1,
            Some(s) => match s.parse::<u32>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(format!(
                        "day-of-week step {s:?} in {field:?} is not a positive number"
                    ));
                }
            },
        };
        let (first, last) = match range {
            "*" => (0, 6),
            _ => match range.split_once('-') {
                Some((a, b)) => (day_number(a, field)?, day_number(b, field)?),
                // `5/2` means from 5 to the end of the week, as in crontab.
                None if step > 1 => (day_number(range, field)?, 6),
                None => {
                    let d = day_number(range, field)?;
                    (d, d)
                }
            },
        };
        if first > last {
            return Err(format!(
                "day-of-week range {range:?} in {field:?} runs backwards; write it as a list, e.g. 5,6,0"
            ));
        }
        days.extend((first..=last).step_by(step as usize).map(|d| d % 7 + 1));
    }
    days.sort_unstable();
    days.dedup();
    Ok(days
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(","))
}

fn day_number(text: &str, field: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if n <= 7 => Ok(n),
        Ok(n) => Err(format!(
            "day-of-week {n} in {field:?} is out of range 0-7 (0 and 7 are Sunday)"
        )),
        Err(_) => Err(format!(
            "day-of-week {text:?} in {field:?} is not understood: write numbers 0-7 with ranges, lists and steps, \
             or names (MON-FRI), not a mix of both"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_of_week_translation() {
        let check = |crontab: &str, cron: &str| {
            assert_eq!(
                translate_day_of_week(crontab).as_deref(),
                Ok(cron),
                "{crontab}"
            );
        };
        check("*", "*");
        check("?", "?");
        check("MON-FRI", "MON-FRI");
        check("1", "2");
        check("0", "1");
        check("7", "1");
        check("1-5", "2,3,4,5,6");
        check("0,6", "1,7");
        check("5-7", "1,6,7");
        check("*/2", "1,3,5,7");
        check("1-5/2", "2,4,6");
        check("3/2", "4,6");
    }

    #[test]
    fn untranslatable_day_of_week() {
        for (field, expected) in [
            ("8", "out of range"),
            ("MON-5", "not a mix"),
            ("5#3", "not understood"),
            ("5-1", "runs backwards"),
            ("1/0", "not a positive number"),
        ] {
            let err = translate_day_of_week(field).unwrap_err();
            assert!(err.contains(expected), "{field}: {err}");
        }
    }
}
