//! The report page (src/report.rs) in a real browser: headless Chromium
//! loads it and its DOM is read back after the scripts ran (`--dump-dom`).
//! The page marks what it drew: body's `data-rendered` = the charts drawn
//! with at least one point, each chart container's `data-points` = the
//! points it drew, body's `data-error` = any script error.
//!
//! Chromium is found on PATH (`chromium`, `chromium-browser`,
//! `google-chrome`), else installed with `scripts/install-chromium.sh`
//! (Debian's package). `NUDGEFLOW_REPORT_SAVE=DIR` keeps the pages and the
//! DOMs the browser returned, to look at.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nudgeflow::report::{live_page, static_page};
use serde_json::{Value, json};

/// The page's charts: the heat map, the curves, the uplift, P(alive), users
/// at risk, delivery.
const CHARTS: &[&str] = &[
    "heatmap", "curves", "uplift", "palive", "atrisk", "delivery",
];

// --- the browser -------------------------------------------------------------

fn find_browser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Chromium, installed once (for all the tests of this binary) when missing.
fn browser() -> &'static Path {
    static BROWSER: OnceLock<PathBuf> = OnceLock::new();
    BROWSER.get_or_init(|| {
        if let Some(found) = find_browser() {
            return found;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-chromium.sh");
        eprintln!("no Chromium on PATH: running {}", script.display());
        let status = Command::new("bash")
            .arg(&script)
            .status()
            .expect("run scripts/install-chromium.sh");
        assert!(
            status.success(),
            "scripts/install-chromium.sh failed: {status}"
        );
        find_browser().expect("Chromium on PATH after scripts/install-chromium.sh")
    })
}

/// Loads `url` in headless Chromium and returns the DOM once the page's
/// scripts ran (5 s of virtual time: timers run ahead, network waits).
fn dump_dom(url: &str, save_as: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(browser())
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--virtual-time-budget=5000",
            // This machine's network is closed: no background connections.
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--disable-dev-shm-usage",
            "--window-size=1280,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start Chromium");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("Chromium did not finish within 90 s on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let dom = out.join().unwrap().expect("Chromium's output is UTF-8");
    let log = err.join().unwrap();
    assert!(
        status.success(),
        "Chromium failed ({status}) on {url}:\n{log}"
    );
    assert!(
        dom.contains("<body"),
        "no DOM from Chromium on {url}:\n{log}"
    );
    save(&format!("{save_as}.dom.html"), &dom);
    dom
}

fn save(name: &str, text: &str) {
    if let Some(dir) = std::env::var_os("NUDGEFLOW_REPORT_SAVE") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn load_static(data: &Value, name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.html");
    let page = static_page(data);
    save(&format!("{name}.html"), &page);
    std::fs::write(&file, page).unwrap();
    dump_dom(&format!("file://{}", file.display()), name)
}

// --- reading the DOM ------------------------------------------------------------

/// The opening tag that contains byte `at`.
fn tag_around(dom: &str, at: usize) -> &str {
    let start = dom[..at].rfind('<').unwrap();
    let end = at + dom[at..].find('>').unwrap();
    &dom[start..=end]
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

fn body_attr<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    attr(tag_around(dom, dom.find("<body").unwrap() + 1), name)
}

struct Chart<'a> {
    name: &'a str,
    points: Option<u64>,
    /// The container's markup up to the next chart's (or the end of main).
    inner: &'a str,
}

fn charts(dom: &str) -> Vec<Chart<'_>> {
    let starts: Vec<usize> = dom
        .match_indices(" data-chart=\"")
        .map(|(at, _)| at)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(i, &at)| {
            let tag = tag_around(dom, at);
            let end = starts
                .get(i + 1)
                .copied()
                .unwrap_or_else(|| at + dom[at..].find("</main>").unwrap());
            Chart {
                name: attr(tag, "data-chart").unwrap(),
                points: attr(tag, "data-points")
                    .map(|p| p.parse().expect("data-points is a number")),
                inner: &dom[at..end],
            }
        })
        .collect()
}

fn text_of_id<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!(" id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    let len = dom[start..].find('<').unwrap();
    &dom[start..start + len]
}

fn assert_no_script_error(dom: &str) {
    assert_eq!(
        body_attr(dom, "data-error"),
        None,
        "the page had a script error"
    );
}

// --- the data --------------------------------------------------------------------

const AS_OF: &str = "2026-03-09T10:00:00.001Z";
const COHORTS: [&str; 5] = [
    "2026-02-02",
    "2026-02-09",
    "2026-02-16",
    "2026-02-23",
    "2026-03-02",
];
const K: usize = 4;

/// The number of buckets of cohort `i` (of COHORTS) up to the as-of week.
fn reached(i: usize) -> usize {
    (COHORTS.len() - i).min(K) + 1
}

/// A ReportData value: five weekly cohorts, two segments, both groups,
/// the churn histogram, 14 days at risk, three channels.
fn full_data() -> Value {
    let segments = ["ecommerce", "travel"];
    let mut rows = Vec::new();
    for (i, cohort) in COHORTS.iter().enumerate() {
        for (s, segment) in segments.iter().enumerate() {
            for group in ["holdout", "treated"] {
                let size: u64 = if group == "treated" {
                    600 + 40 * i as u64 + 90 * s as u64
                } else {
                    70 + 5 * i as u64
                };
                let keep = if group == "treated" { 0.55 } else { 0.45 } - 0.03 * s as f64;
                let retained: Vec<Value> = (0..=K)
                    .map(|k| {
                        if k < reached(i) {
                            json!((size as f64 * keep.powi(k as i32)).round() as u64)
                        } else {
                            Value::Null
                        }
                    })
                    .collect();
                rows.push(json!({
                    "cohort": cohort, "segment": segment, "group": group,
                    "size": size, "retained": retained
                }));
            }
        }
    }
    let mut uplift = Vec::new();
    for segment in segments {
        for k in 1..=K {
            let pooled = |group: &str| {
                let (mut users, mut kept) = (0u64, 0u64);
                for r in &rows {
                    if r["segment"] == segment && r["group"] == group && !r["retained"][k].is_null()
                    {
                        users += r["size"].as_u64().unwrap();
                        kept += r["retained"][k].as_u64().unwrap();
                    }
                }
                let rate = kept as f64 / users as f64;
                (
                    json!({"users": users, "retained": kept, "rate": rate}),
                    rate,
                    users as f64,
                )
            };
            let (treated, p1, n1) = pooled("treated");
            let (holdout, p2, n2) = pooled("holdout");
            let se = (p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2).sqrt();
            let u = p1 - p2;
            uplift.push(json!({
                "segment": segment, "k": k, "treated": treated, "holdout": holdout,
                "uplift": u, "ci95": [u - 1.96 * se, u + 1.96 * se]
            }));
        }
    }
    let edges: Vec<f64> = (0..=20).map(|i| i as f64 / 20.0).collect();
    let counts: Vec<u64> = (0..20u64).map(|i| 3 + i * i / 2).collect();
    // 2026-02-24 to 2026-03-09 (February 2026 has 28 days).
    let day = |d: u32| match 24 + d {
        n if n <= 28 => format!("2026-02-{n:02}"),
        n => format!("2026-03-{:02}", n - 28),
    };
    let at_risk: Vec<Value> = (0..14)
        .map(|d| json!({"day": day(d), "users": 10 + (d * 7) % 5}))
        .collect();
    let rate = |d: u64, ok: u64| ok as f64 / d as f64;
    json!({
        "as_of": AS_OF,
        "title": "ecommerce.toml on fixtures/report </script><b>not bold</b>",
        "retention": {"as_of": AS_OF, "bucket": "week", "rows": rows},
        "uplift": uplift,
        "p_alive": {"edges": edges, "counts": counts},
        "at_risk": at_risk,
        "delivery": {
            "as_of": AS_OF,
            "channels": {
                "email": {"dispatched": 40, "delivered": 31, "failed": 5, "success_rate": rate(40, 31)},
                "push": {"dispatched": 10, "delivered": 7, "failed": 2, "success_rate": rate(10, 7)},
                "sms": {"dispatched": 12, "delivered": 12, "failed": 0, "success_rate": 1.0}
            },
            "rules": {
                "cart-reminder": {"dispatched": 30, "delivered": 25, "failed": 3, "success_rate": rate(30, 25)},
                "win-back": {"dispatched": 32, "delivered": 25, "failed": 4, "success_rate": rate(32, 25)}
            },
            "notifications": {"total": 55, "succeeded": 48}
        }
    })
}

fn empty_data() -> Value {
    json!({
        "as_of": AS_OF,
        "title": "empty",
        "retention": {"as_of": AS_OF, "bucket": "week", "rows": []},
        "uplift": [],
        "p_alive": null,
        "at_risk": null,
        "delivery": {"as_of": AS_OF, "channels": {}, "rules": {}, "notifications": {"total": 0, "succeeded": 0}}
    })
}

/// The points each chart draws from `full_data()`.
fn expected_points() -> Vec<(&'static str, u64)> {
    let cells: usize = (0..COHORTS.len()).map(reached).sum();
    vec![
        ("heatmap", cells as u64), // one row per cohort, both groups and segments summed
        ("curves", 2 * (K as u64 + 1)), // treated and holdout, k = 0..=K
        ("uplift", 2 * K as u64),  // two segments, k = 1..=K
        ("palive", 20),
        ("atrisk", 14),
        ("delivery", 3 * 4), // delivered, failed, other, success rate
    ]
}

fn assert_full(dom: &str) {
    assert_no_script_error(dom);
    let charts = charts(dom);
    let names: Vec<&str> = charts.iter().map(|c| c.name).collect();
    assert_eq!(names, CHARTS);
    for (chart, (name, points)) in charts.iter().zip(expected_points()) {
        assert_eq!(chart.name, name);
        assert_eq!(chart.points, Some(points), "points drawn by {name}");
        assert!(!chart.inner.contains("No data"), "{name} says no data");
    }
    assert_eq!(
        body_attr(dom, "data-rendered"),
        Some(CHARTS.len().to_string().as_str())
    );
    // The canvases are there, and the heat map's cells.
    assert_eq!(dom.matches("<canvas").count(), CHARTS.len() - 1);
    assert!(dom.contains("class=\"cell\""));
}

// --- the tests -------------------------------------------------------------------

#[test]
fn static_page_draws_every_chart() {
    let dom = load_static(&full_data(), "full");
    assert_full(&dom);
    // The title is text, not markup.
    assert_eq!(text_of_id(&dom, "as-of"), AS_OF);
    assert!(
        dom.contains("&lt;/script&gt;&lt;b&gt;not bold&lt;/b&gt;"),
        "the title is not shown as text"
    );
    assert!(!dom.contains("<b>not bold</b>"));
    // The uplift table has a row per segment and k, the rules table a row
    // per rule; no error is shown.
    assert_eq!(
        dom.matches("<tr>").count(),
        1 + 2 * K + 1 + 2 + COHORTS.len() + 1
    );
    assert!(dom.contains("id=\"error\" class=\"error\" role=\"alert\" hidden"));
}

#[test]
fn static_page_without_data_says_so() {
    let dom = load_static(&empty_data(), "empty");
    assert_no_script_error(&dom);
    assert_eq!(body_attr(&dom, "data-rendered"), Some("0"));
    let charts = charts(&dom);
    assert_eq!(charts.len(), CHARTS.len());
    for chart in &charts {
        assert_eq!(chart.points, Some(0), "{}", chart.name);
        assert!(
            chart.inner.contains("No data"),
            "{} does not say no data",
            chart.name
        );
    }
    assert!(!dom.contains("<canvas"));

    // Nor does a value that lacks whole parts (or is null) break the page.
    for (name, data) in [("null", Value::Null), ("bare", json!({"as_of": AS_OF}))] {
        let dom = load_static(&data, name);
        assert_no_script_error(&dom);
        assert_eq!(body_attr(&dom, "data-rendered"), Some("0"), "{name}");
    }
}

// --- the live page ------------------------------------------------------------

/// Serves `live_page(1)` at `/` and `GET /v1/report` on a loopback port:
/// the report needs `Authorization: Bearer s3cret`; its title counts the
/// requests; after `fail_after` answers it answers 500.
fn serve(fail_after: usize) -> (u16, Arc<AtomicUsize>) {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::{Html, IntoResponse};
    use axum::routing::get;

    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let report = move |headers: HeaderMap| {
                let counter = counter.clone();
                async move {
                    let json = [(header::CONTENT_TYPE, "application/json")];
                    if headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        != Some("Bearer s3cret")
                    {
                        return (
                            StatusCode::UNAUTHORIZED,
                            json,
                            r#"{"error":"unauthorized"}"#.to_string(),
                        )
                            .into_response();
                    }
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    if n > fail_after {
                        return (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            json,
                            r#"{"error":"the job stopped"}"#.to_string(),
                        )
                            .into_response();
                    }
                    let mut data = full_data();
                    data["title"] = json!(format!("live report #{n}"));
                    (StatusCode::OK, json, data.to_string()).into_response()
                }
            };
            let app = axum::Router::new()
                .route("/", get(|| async { Html(live_page(1)) }))
                .route("/v1/report", get(report));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap().port()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let port = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the test server starts");
    (port, hits)
}

#[test]
fn live_page_fetches_and_redraws() {
    let (port, hits) = serve(usize::MAX);
    let dom = dump_dom(&format!("http://127.0.0.1:{port}/#token=s3cret"), "live");
    assert_full(&dom);
    assert_eq!(body_attr(&dom, "data-fetch-error"), None);
    // Redrawn every second of the 5 s budget: the title is a later fetch's.
    let fetched = hits.load(Ordering::SeqCst);
    assert!(fetched >= 3, "only {fetched} fetches");
    let title = text_of_id(&dom, "title");
    let n: usize = title
        .strip_prefix("live report #")
        .unwrap_or_else(|| panic!("title {title:?}"))
        .parse()
        .unwrap();
    assert!(
        n >= 3 && n <= fetched,
        "title {title:?} after {fetched} fetches"
    );
    assert_eq!(text_of_id(&dom, "as-of"), AS_OF);
    assert!(text_of_id(&dom, "updated").contains("refreshing every 1 s"));
}

#[test]
fn live_page_shows_fetch_errors() {
    // Without the token: 401, nothing to draw, the error line says why.
    let (port, _) = serve(usize::MAX);
    let dom = dump_dom(&format!("http://127.0.0.1:{port}/"), "live-401");
    assert_no_script_error(&dom);
    assert_eq!(body_attr(&dom, "data-rendered"), None);
    let error = text_of_id(&dom, "error");
    assert!(
        error.contains("HTTP 401: unauthorized"),
        "error line {error:?}"
    );
    assert!(!tag_around(&dom, dom.find("id=\"error\"").unwrap()).contains("hidden"));

    // A fetch that fails after one that worked: the last data stays drawn,
    // with the error line.
    let (port, hits) = serve(1);
    let dom = dump_dom(
        &format!("http://127.0.0.1:{port}/#token=s3cret"),
        "live-500",
    );
    assert!(hits.load(Ordering::SeqCst) >= 2);
    assert_full(&dom);
    assert_eq!(text_of_id(&dom, "title"), "live report #1");
    let error = text_of_id(&dom, "error");
    assert!(
        error.contains("HTTP 500: the job stopped") && error.contains("showing the last data"),
        "error line {error:?}"
    );
    assert!(body_attr(&dom, "data-fetch-error").is_some());
}

/// The page as `replay --serve` serves it at `/`, drawing what the real
/// server's `/v1/report` answers for a replay of generated data (with
/// provider receipts) under dataflows/ecommerce.toml: every chart but the
/// at-risk line (three days of data put nobody at risk) drawn with data.
#[test]
fn the_served_page_draws_a_real_replay() {
    use nudgeflow::r#gen::receipts::{ReceiptOptions, generate_receipts};
    use nudgeflow::r#gen::{GenOptions, generate};
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let fixture = tmp.path().join("in");
    let opts = GenOptions {
        users: 3_000,
        events: 30_000,
        seed: 5,
        out: fixture.clone(),
        days: 3,
        ..Default::default()
    };
    generate(&opts, &mut |_| {}).unwrap();
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("dataflows/ecommerce.toml");
    let replay = |out: &Path, serve: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nudgeflow"));
        cmd.args(["replay", "-q", "--spec"])
            .arg(&spec)
            .arg("--fixture")
            .arg(&fixture)
            .arg("--out")
            .arg(out);
        if serve {
            cmd.args(["--serve", "127.0.0.1:0"]);
        }
        cmd.stderr(Stdio::piped()).spawn().unwrap()
    };
    let plain = tmp.path().join("plain");
    assert!(replay(&plain, false).wait().unwrap().success());
    generate_receipts(&ReceiptOptions {
        dispatches: vec![plain.join("dispatches.jsonl")],
        out: fixture.clone(),
        seed: 5,
    })
    .unwrap();
    let mut server = replay(&tmp.path().join("out"), true);
    let mut stderr = BufReader::new(server.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the server did not start"
        );
        if let Some(rest) = line.split("http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let dom = dump_dom(&format!("http://{addr}/"), "served");
    server.kill().unwrap();
    server.wait().unwrap();
    assert_no_script_error(&dom);
    assert_eq!(body_attr(&dom, "data-fetch-error"), None);
    let drawn: Vec<&str> = charts(&dom)
        .iter()
        .filter(|c| c.points.is_some_and(|p| p > 0))
        .map(|c| c.name)
        .collect();
    for chart in ["heatmap", "curves", "uplift", "palive", "delivery"] {
        assert!(drawn.contains(&chart), "{chart} not drawn: {drawn:?}");
    }
}
