//! The analytics report page: one self-contained HTML file that draws a
//! `ReportData` value (retention cohorts, treated vs holdout curves and
//! uplift, the P(alive) histogram, users at risk, delivery per channel; the
//! aggregates of `docs/semantics.md` §5 and §8).
//!
//! The page is built from the files under `assets/report/`, embedded here:
//! the template, its CSS and JS, and Chart.js (vendored, MIT; see
//! `assets/report/README.md`). It loads nothing from anywhere: every script
//! and style is inline, and its Content-Security-Policy forbids any other
//! source (`connect-src 'self'` only, for the live page's fetch).
//!
//! - [`static_page`] inlines the data, for `nudgeflow report --out FILE`;
//! - [`live_page`] fetches `GET /v1/report` from the origin that served it
//!   (with `Authorization: Bearer T` when the page's URL ends in `#token=T`)
//!   and redraws every few seconds, for `/` of `replay --serve` and `run`.
//!
//! Once drawn, the page's body has `data-rendered` = the number of charts
//! with at least one data point, and each chart container (`[data-chart]`)
//! `data-points` = the points it drew; `tests/report_page.rs` reads them
//! from headless Chromium.

use serde_json::{Value, json};

const TEMPLATE: &str = include_str!("../assets/report/report.html");
const CSS: &str = include_str!("../assets/report/report.css");
const REPORT_JS: &str = include_str!("../assets/report/report.js");
const CHART_JS: &str = include_str!("../assets/report/chart.umd.js");

/// The endpoint the live page polls.
pub const REPORT_ENDPOINT: &str = "/v1/report";

/// The report page with `data` (a `ReportData` value) inlined: opens from a
/// file, offline.
pub fn static_page(data: &Value) -> String {
    page(&json!({"mode": "static"}), data)
}

/// The report page without data: it fetches [`REPORT_ENDPOINT`] from its
/// own origin and redraws every `refresh_seconds` (at least 1), showing the
/// data's `as_of` and an error line while a fetch fails.
pub fn live_page(refresh_seconds: u32) -> String {
    let config = json!({
        "mode": "live",
        "endpoint": REPORT_ENDPOINT,
        "refresh_seconds": refresh_seconds.max(1),
    });
    page(&config, &Value::Null)
}

fn page(config: &Value, data: &Value) -> String {
    let config = script_json(config);
    let data = script_json(data);
    let chart_js = without_source_map(CHART_JS);
    let mut out = String::with_capacity(
        TEMPLATE.len() + CSS.len() + REPORT_JS.len() + chart_js.len() + data.len() + 256,
    );
    // One pass over the template: a marker in the inserted text (say, in a
    // string of the data) is never taken for one of the template's.
    let mut rest = TEMPLATE;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").expect("an unclosed marker in report.html");
        let insert = match &after[..end] {
            "CSS" => CSS,
            "CONFIG" => config.as_str(),
            "DATA" => data.as_str(),
            "CHART_JS" => chart_js,
            "REPORT_JS" => REPORT_JS,
            other => panic!("an unknown marker {{{{{other}}}}} in report.html"),
        };
        out.push_str(insert);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// JSON to sit inside `<script type="application/json">`: `<`, `>` and `&`
/// (which JSON has only inside strings) are written as `\u003c` etc., so
/// neither `</script>` nor `<!--` in a string can end or change the element;
/// U+2028 and U+2029 too, for old JavaScript parsers. `JSON.parse` reads it
/// back unchanged.
fn script_json(value: &Value) -> String {
    let text = serde_json::to_string(value).expect("a JSON value serializes");
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The vendored build ends with a `//# sourceMappingURL=` comment, which
/// would make a browser's developer tools ask for a file the page lacks.
fn without_source_map(js: &str) -> &str {
    match js.rfind("//# sourceMappingURL=") {
        Some(at) if !js[at..].trim_end().contains('\n') => &js[..at],
        _ => js,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        json!({
            "as_of": "2026-03-09T10:00:00.001Z",
            "title": "evil </script><script>alert(1)</script> <!-- & \u{2028}",
            "retention": {"as_of": "2026-03-09T10:00:00.001Z", "bucket": "week", "rows": [
                {"cohort": "2026-03-02", "segment": "</SCRIPT>", "group": "treated", "size": 3, "retained": [3, 1, null]}
            ]},
            "uplift": [],
            "p_alive": null,
            "at_risk": null,
            "delivery": {"as_of": "2026-03-09T10:00:00.001Z", "channels": {}, "rules": {}, "notifications": {"total": 0, "succeeded": 0}}
        })
    }

    /// The text of the element `<script type="application/json" id="ID">`.
    fn json_script<'a>(page: &'a str, id: &str) -> &'a str {
        let open = format!("<script type=\"application/json\" id=\"{id}\">");
        let start = page.find(&open).expect("the data element") + open.len();
        let len = page[start..].find("</script>").expect("its end");
        &page[start..start + len]
    }

    #[test]
    fn data_is_inlined_and_escaped() {
        let data = sample();
        let page = static_page(&data);
        let inlined = json_script(&page, "report-data");
        // The element ends where it should: the whole value is in it, and
        // reads back as the same value.
        let back: Value = serde_json::from_str(inlined).expect("the inlined data is JSON");
        assert_eq!(back, data);
        for bad in ["<", ">", "&", "\u{2028}"] {
            assert!(
                !inlined.contains(bad),
                "{bad:?} left unescaped in {inlined}"
            );
        }
        assert!(inlined.contains("\\u003c/script\\u003e"));
        // Nothing of the data outside its element.
        assert!(!page.contains("alert(1)</script>"));
        assert!(!page.to_ascii_lowercase().contains("</script><script>alert"));
        assert_eq!(json_script(&page, "report-config"), r#"{"mode":"static"}"#);
        // No marker left behind, and a marker-like string in the data stays
        // as it is.
        assert!(!page.contains("{{"));
        let marked = static_page(&json!({"title": "{{CSS}}"}));
        assert!(json_script(&marked, "report-data").contains("{{CSS}}"));
    }

    #[test]
    fn live_page_has_no_data_and_its_endpoint() {
        let page = live_page(7);
        assert_eq!(json_script(&page, "report-data"), "null");
        let config: Value = serde_json::from_str(json_script(&page, "report-config")).unwrap();
        assert_eq!(
            config,
            json!({"mode": "live", "endpoint": "/v1/report", "refresh_seconds": 7})
        );
        let config: Value =
            serde_json::from_str(json_script(&live_page(0), "report-config")).unwrap();
        assert_eq!(config["refresh_seconds"], 1);
    }

    /// The page as the browser reads it, less the licence banners
    /// (`/*! … */`) that name the vendored library's home page.
    fn without_banners(page: &str) -> String {
        let mut out = String::new();
        let mut rest = page;
        while let Some(start) = rest.find("/*!") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find("*/").expect("a closed banner");
            rest = &rest[start + end + 2..];
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn page_references_no_url() {
        for page in [static_page(&sample()), live_page(5)] {
            let page = without_banners(&page);
            let lower = page.to_ascii_lowercase();
            // A scheme in any case; CSS's `url(` and `@import` as CSS spells
            // them (Chart.js has a `toDataURL(`).
            let found = ["http://", "https://", "ftp://", "//cdn", "sourcemappingurl"]
                .into_iter()
                .map(|bad| (bad, lower.find(bad)))
                .chain(
                    ["url(", "@import"]
                        .into_iter()
                        .map(|bad| (bad, page.find(bad))),
                );
            for (bad, at) in found {
                if let Some(at) = at {
                    let around = page
                        .get(at.saturating_sub(80)..(at + 80).min(page.len()))
                        .unwrap_or("");
                    panic!("the page has {bad:?}: …{around}…");
                }
            }
            // Every script and style is inline.
            assert!(!lower.contains("<script src"), "an external script");
            assert!(!lower.contains("<link"), "a linked resource");
            assert!(lower.contains("content-security-policy"));
        }
        // Our own files have no URL at all, banners or not.
        for (name, text) in [
            ("report.html", TEMPLATE),
            ("report.css", CSS),
            ("report.js", REPORT_JS),
        ] {
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{name} has a URL"
            );
        }
    }
}
