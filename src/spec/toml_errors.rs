//! TOML syntax errors said in the spec's terms: which table and key, what
//! is wrong, and what to write instead; and, for every key, an example of
//! what it takes (also used for missing keys and values of the wrong type).
//!
//! The TOML reader knows the byte span of a syntax error. Here the span
//! finds the key (on its line) and the table (the nearest header above it),
//! and the key finds an example of what it takes.

use std::ops::Range;

/// Where a span is: its table (`rule`, `cap`, `rule.dedup`, …, or `""` at
/// the top), the rule's name if known, and the key on the span's line.
struct Place<'a> {
    table: String,
    rule_name: Option<&'a str>,
    key: Option<&'a str>,
}

fn place<'a>(text: &'a str, span: &Range<usize>) -> Place<'a> {
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[line_start..line_end].trim();
    // `key = value` (the key may be quoted or dotted), or a header.
    let key = (!line.starts_with('['))
        .then(|| {
            line.split_once('=')
                .map(|(k, _)| k.trim().trim_matches('"'))
        })
        .flatten()
        .filter(|k| !k.is_empty());
    // The nearest header at or above the line, and the rule name after it.
    let mut table = String::new();
    let mut header_at = 0;
    for (at, l) in lines_before(text, line_end) {
        let l = l.trim();
        if l.starts_with('[') {
            table = l.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            header_at = at;
        }
    }
    let rule_name = (table == "rule")
        .then(|| {
            text[header_at..]
                .lines()
                .skip(1)
                .take_while(|l| !l.trim().starts_with('['))
                .find_map(|l| {
                    let (k, v) = l.split_once('=')?;
                    (k.trim() == "name").then(|| v.trim().trim_matches('"'))
                })
        })
        .flatten();
    Place {
        table,
        rule_name,
        key,
    }
}

/// Lines (with their byte offsets) that start before `end`.
fn lines_before(text: &str, end: usize) -> impl Iterator<Item = (usize, &str)> {
    let mut at = 0;
    text.split_inclusive('\n').map_while(move |l| {
        let start = at;
        at += l.len();
        (start <= end).then_some((start, l))
    })
}

/// What a key takes, as something to write.
pub(super) fn example(key: &str) -> Option<&'static str> {
    Some(match key {
        "name" => "a string, e.g. name = \"cart-recovery\"",
        "on" | "cancel_on" => {
            "an event type or a list of them (`*` matches any run of characters), e.g. on = \"cart.*\" or on = [\"order.placed\", \"order.paid\"]"
        }
        "template" => "a string, e.g. template = \"cart-reminder\"",
        "purpose" => "purpose = \"marketing\" or purpose = \"transactional\"",
        "priority" => "priority = \"normal\", \"high\" or \"critical\"",
        "channels" | "channel" => {
            "channel names: push, email, sms, in_app, webhook, e.g. channels = [\"push\", \"email\"]"
        }
        "delay" | "fallback_after" | "dedup_horizon" | "allowed_lateness" | "per" | "window"
        | "before" => "a duration string, e.g. \"30m\", \"24h\" or \"1h30m\"",
        "at" => "at = { field = \"starts_at\", before = \"24h\" }",
        "dedup" => "dedup = { window = \"24h\", key = \"order_id\" }",
        "where" => "where = [{ field = \"cart_value\", op = \">\", value = 50 }]",
        "field" | "key" => "a path into the event's data, e.g. \"cart_value\" or \"order.id\"",
        "op" => "one of =, !=, <, <=, >, >=, in, exists, not_exists",
        "value" => "a string, a number, a boolean or a list of them",
        "max" => "a whole number, e.g. max = 3",
        "holdout" => "a fraction from 0.0 to 1.0, e.g. holdout = 0.05",
        "rule" => "rules as [[rule]] tables (two brackets: a list of tables)",
        "cap" => "caps as [[cap]] tables (two brackets: a list of tables)",
        "analytics" => {
            "an [analytics] table (one bracket), e.g. [analytics] with activity = [\"order.placed\"]"
        }
        "activity" => {
            "an event type or a list of them (`*` matches any run of characters), e.g. activity = [\"order.placed\", \"page.*\"]"
        }
        "segment" => "a path into the event's data, e.g. segment = \"plan\" or \"customer.tier\"",
        "bucket" => "bucket = \"day\", \"week\" or \"month\"",
        "churn" => {
            "an [analytics.churn] table, e.g. [analytics.churn] with r = 0.243, alpha = 4.414, a = 0.793, b = 2.426, threshold = 0.3"
        }
        "r" => "a positive number, e.g. r = 0.243",
        "alpha" => "a positive number (in `unit`s), e.g. alpha = 4.414",
        "a" => "a positive number, e.g. a = 0.793",
        "b" => "a positive number, e.g. b = 2.426",
        "unit" => "unit = \"day\" or \"week\"",
        "threshold" => "a probability between 0 and 1, e.g. threshold = 0.3",
        _ => return None,
    })
}

/// The field as errors name it: `rule \`a\`: delay`, `cap: max`, `holdout`.
fn field_name(place: &Place<'_>, key: &str) -> String {
    let table = match (place.table.as_str(), place.rule_name) {
        ("", _) => return key.to_string(),
        ("rule", Some(name)) => format!("rule `{name}`"),
        (t, _) => t.to_string(),
    };
    format!("{table}: {key}")
}

/// The TOML reader's syntax error `message` at `span`, as (field, message
/// with a fix).
pub(super) fn explain(text: &str, span: &Range<usize>, message: &str) -> (String, String) {
    let place = place(text, span);
    let duplicate = message.starts_with("duplicate key");
    let Some(key) = place.key else {
        // On a header line, or a line that is neither a header nor a key.
        if duplicate && !place.table.is_empty() {
            let t = &place.table;
            return (
                String::new(),
                format!(
                    "the table `{t}` is defined twice; keep one, or write [[{t}]] for each table of a list"
                ),
            );
        }
        return (String::new(), message.to_string());
    };
    let field = field_name(&place, key);
    if duplicate {
        return (
            field,
            format!("`{key}` is set twice in this table; keep one"),
        );
    }
    let write = example(key).map_or(String::new(), |e| format!("; write {e}"));
    (field, format!("{message}{write}"))
}

#[cfg(test)]
mod tests {
    use crate::spec::Spec;

    fn error(text: &str) -> String {
        Spec::parse("t.toml", text).unwrap_err().to_string()
    }

    const RULE: &str =
        "[[rule]]\nname = \"a\"\non = \"x\"\npurpose = \"marketing\"\nchannels = [\"push\"]\n";

    /// Syntax errors, missing keys and values of the wrong type name the
    /// table and key, and say what to write, in the spec's terms rather
    /// than Rust's.
    #[test]
    fn reader_errors_name_the_field_and_the_fix() {
        let cases = [
            (
                format!("{RULE}delay = 30\n"),
                "t.toml:6: rule `a`: delay: is integer `30`; write a duration string",
            ),
            (
                format!("{RULE}on2 = 1\n"),
                "t.toml:6: rule `a`: unknown key `on2`; did you mean `on`?",
            ),
            (
                "[[rule]]\nname = \"a\"\non = 5\npurpose = \"marketing\"\nchannels = [\"push\"]\n"
                    .into(),
                "t.toml:3: rule `a`: on: is integer `5`; write an event type or a list",
            ),
            (
                format!("{RULE}at = \"starts_at\"\n"),
                "t.toml:6: rule `a`: at: is string \"starts_at\"; write at = { field",
            ),
            (
                "[[rule]]\nname = \"a\"\non = \"x\"\nchannels = [\"push\"]\n".into(),
                "t.toml:1: rule `a`: purpose: missing; write purpose = \"marketing\"",
            ),
            (
                "holdout = 0.1\nholdout = 0.2\n".into(),
                "t.toml:2: holdout: `holdout` is set twice",
            ),
            (
                format!("{RULE}holdout = 0.05\n"),
                "`holdout` is a top-level key: put it above the first [[rule]]",
            ),
            (
                "[rule]\nname = \"a\"\n".into(),
                "t.toml:1: rule: is a table; write rules as [[rule]] tables",
            ),
            (
                "[[cap]]\npurpose = \"marketing\"\nmax = 2.5\nper = \"1h\"\n".into(),
                "t.toml:3: cap: max: is float `2.5`; write a whole number",
            ),
            (
                format!("{RULE}channels = \"push\"\n"),
                "t.toml:6: rule `a`: channels: `channels` is set twice in this table; keep one",
            ),
            (
                "[[rule]]\nname = \"a\"\n[rule]\n".into(),
                "t.toml:3: the table `rule` is defined twice; keep one, or write [[rule]]",
            ),
            (
                format!("{RULE}delay = \"1h\nx = 1\n"),
                "t.toml:6: rule `a`: delay: invalid basic string, expected `\"`; write a duration string",
            ),
        ];
        for (text, expected) in cases {
            let e = error(&text);
            assert!(e.contains(expected), "{text}\n=> {e}\nwanted: {expected}");
            assert!(
                !e.contains("Raw") && !e.contains("OneOrMany") && !e.contains("i64"),
                "{e}"
            );
        }
    }
}
