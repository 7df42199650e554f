//! The query API (DESIGN.md §8) of the real binary against its document,
//! `docs/openapi.json`, and against the files of `replay --out`.
//!
//! Each test starts `nudgeflow replay --serve 127.0.0.1:0` on a fixture
//! (killed when the test ends, pass or fail), reads the address from its
//! stderr and makes real HTTP requests. Every answer to a documented route
//! is checked against the document: its status must be listed for the
//! path and method, its content type too, and a JSON body must validate
//! against the documented schema (a small JSON Schema validator below,
//! which refuses keywords it does not know rather than ignore them). The
//! answers are then checked against `retention.json`, `delivery.json` and
//! `churn.jsonl` of the same replay, and against the contract's semantics:
//! ordering, filters, offsets, errors, the bearer token and `--as-of`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_nudgeflow");

/// The fixture with churn (`[analytics.churn]`, threshold 0.3).
const RETENTION: &str = "analytics-retention";
/// The fixture without a churn table.
const DELIVERY: &str = "analytics-delivery";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static DOC: LazyLock<Value> = LazyLock::new(|| {
    let path = root().join("docs/openapi.json");
    let text = std::fs::read_to_string(&path).expect("docs/openapi.json is readable");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
});

// ---------------------------------------------------------------------------
// The server.

/// Kills the child when dropped, so that no server outlives its test.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `replay --serve` of one fixture, its `--out` directory, and an HTTP
/// client that checks every answer against the document.
struct Server {
    base: String,
    out: PathBuf,
    /// The token sent by [`Server::get`] (with `--token-env`).
    token: Option<String>,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    /// (method, documented path) of every request that matched one.
    exercised: Mutex<BTreeSet<(String, String)>>,
    // Dropped last: the process, then the directory it wrote.
    _child: Killed,
    _dir: tempfile::TempDir,
}

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The `Content-Type` header, whole.
    content_type: String,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// Asserts `status` and a body `{"error": "…"}`; returns the message.
    fn expect_error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            media_type(&self.content_type),
            "application/json",
            "{self:?}"
        );
        let body = self.json();
        let object = body.as_object().expect("an error is an object");
        assert_eq!(object.len(), 1, "an error has `error` only: {body}");
        body["error"]
            .as_str()
            .expect("`error` is a string")
            .to_string()
    }
}

/// Starts `nudgeflow replay --serve 127.0.0.1:0 -q` on `fixture` with
/// `args` and `env`, and waits for it to serve.
fn serve(fixture: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
    let fixture = root().join("fixtures").join(fixture);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("out");
    let mut command = Command::new(BIN);
    command
        .arg("replay")
        .arg("--spec")
        .arg(fixture.join("spec.toml"))
        .arg("--fixture")
        .arg(&fixture)
        .arg("--out")
        .arg(&out)
        .args(["--serve", "127.0.0.1:0", "-q"])
        .args(args)
        .env_remove("NUDGEFLOW_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("nudgeflow starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let child = Killed(child);
    // Read stderr to its end on a thread of its own (the server must never
    // block on a full pipe); hand its lines over.
    let (lines, from_child) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = lines.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = Vec::new();
    let base = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match from_child.recv_timeout(left) {
            Ok(line) => {
                let prefix = "nudgeflow: serving the query API on ";
                if let Some(rest) = line.strip_prefix(prefix) {
                    let url = rest.split_whitespace().next().expect("an address");
                    break url.to_string();
                }
                seen.push(line);
            }
            Err(_) => panic!("the server never said where it serves; its stderr: {seen:#?}"),
        }
    };
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    Server {
        base,
        out,
        token: None,
        runtime,
        client,
        exercised: Mutex::new(BTreeSet::new()),
        _child: child,
        _dir: dir,
    }
}

/// Who a request says it is.
#[derive(Clone, Copy)]
enum Auth<'a> {
    /// The server's token, if any.
    Default,
    None,
    Bearer(&'a str),
}

impl Server {
    /// `GET path` (with its query), checked against the document.
    fn get(&self, path: &str) -> Answer {
        self.request("GET", path, Auth::Default, None)
    }

    /// A request checked against the document: a documented path must list
    /// the method, the status and the content type, and a JSON body must
    /// validate against the schema; any other path must answer 404
    /// `{"error"}`.
    fn request(&self, method: &str, path: &str, auth: Auth<'_>, body: Option<&str>) -> Answer {
        let answer = self.send(method, path, auth, body);
        let route = path.split('?').next().unwrap();
        match documented_path(route) {
            Some(template) => {
                check_against_document(method, &template, &answer);
                let mut exercised = self.exercised.lock().unwrap();
                exercised.insert((method.to_string(), template));
            }
            None => {
                // DESIGN.md §8: every error is `{"error"}`; an unknown
                // route is 404.
                answer.expect_error(404);
                let schema = serde_json::json!({"$ref": "#/components/schemas/Error"});
                validate_or_panic(&schema, &answer.json(), &format!("{method} {path} 404"));
            }
        }
        answer
    }

    /// A request, unchecked.
    fn send(&self, method: &str, path: &str, auth: Auth<'_>, body: Option<&str>) -> Answer {
        let url = format!("{}{}", self.base, path);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method.clone(), &url);
        let token = match auth {
            Auth::Default => self.token.as_deref(),
            Auth::None => None,
            Auth::Bearer(t) => Some(t),
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        self.runtime.block_on(async {
            let response = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let content_type = headers
                .get(reqwest::header::CONTENT_TYPE)
                .map(|v| v.to_str().expect("a readable content type").to_string())
                .unwrap_or_default();
            let body = response.text().await.expect("a body");
            Answer {
                status,
                content_type,
                headers,
                body,
            }
        })
    }

    /// `GET path`, asserted 200 JSON; its body.
    fn ok(&self, path: &str) -> Value {
        let answer = self.get(path);
        assert_eq!(answer.status, 200, "GET {path}: {answer:?}");
        answer.json()
    }

    /// A file of `--out`, parsed.
    fn out_json(&self, name: &str) -> Value {
        let text =
            std::fs::read_to_string(self.out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// The lines of `--out`/churn.jsonl, parsed.
    fn out_churn(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.out.join("churn.jsonl")).expect("churn.jsonl");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("a churn line is JSON"))
            .collect()
    }

    /// Asserts that every GET route of the document under /v1 was asked.
    fn assert_every_v1_get_exercised(&self) {
        let exercised = self.exercised.lock().unwrap();
        let paths = DOC["paths"].as_object().expect("paths");
        for (path, item) in paths {
            if path.starts_with("/v1/") && item.get("get").is_some() {
                let key = ("GET".to_string(), path.clone());
                assert!(
                    exercised.contains(&key),
                    "docs/openapi.json documents GET {path}, which no request exercised"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The document.

/// The document's path template matching `route` (`{x}` matches one
/// non-empty segment), if any.
fn documented_path(route: &str) -> Option<String> {
    let paths = DOC["paths"].as_object().expect("the document has paths");
    let segments: Vec<&str> = route.split('/').collect();
    paths
        .keys()
        .find(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            parts.len() == segments.len()
                && parts.iter().zip(&segments).all(|(p, s)| {
                    if p.starts_with('{') && p.ends_with('}') {
                        !s.is_empty()
                    } else {
                        p == s
                    }
                })
        })
        .cloned()
}

/// `#/components/...` of the document.
fn resolve(reference: &str) -> &'static Value {
    let pointer = reference
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("only local references: {reference}"));
    DOC.pointer(pointer)
        .unwrap_or_else(|| panic!("docs/openapi.json has no {reference}"))
}

/// A response object, its `$ref` followed.
fn response_object(value: &'static Value) -> &'static Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(r) => response_object(resolve(r)),
        None => value,
    }
}

/// `text/html; charset=utf-8` → `text/html`.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_ascii_lowercase()
}

fn check_against_document(method: &str, template: &str, answer: &Answer) {
    let what = format!("{method} {template} → {}", answer.status);
    let operation = DOC["paths"][template]
        .get(method.to_ascii_lowercase())
        .unwrap_or_else(|| panic!("{what}: docs/openapi.json has no {method} {template}"));
    let response = operation["responses"]
        .get(answer.status.to_string())
        .unwrap_or_else(|| panic!("{what}: the status is not documented; the answer: {answer:?}"));
    let response = response_object(response);
    let media = media_type(&answer.content_type);
    let content = response["content"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: the document gives no content"));
    let (_, documented) = content
        .iter()
        .find(|(key, _)| media_type(key) == media)
        .unwrap_or_else(|| {
            panic!(
                "{what}: content type {:?} is not documented (documented: {:?})",
                answer.content_type,
                content.keys().collect::<Vec<_>>()
            )
        });
    let schema = &documented["schema"];
    if media == "application/json" {
        validate_or_panic(schema, &answer.json(), &what);
    } else {
        validate_or_panic(schema, &Value::String(answer.body.clone()), &what);
    }
    if let Some(headers) = response.get("headers").and_then(Value::as_object) {
        for (name, header) in headers {
            let value = answer
                .headers
                .get(name.as_str())
                .unwrap_or_else(|| panic!("{what}: the documented header {name} is missing"));
            let value = Value::String(value.to_str().unwrap().to_string());
            validate_or_panic(&header["schema"], &value, &format!("{what}, header {name}"));
        }
    }
}

fn validate_or_panic(schema: &Value, value: &Value, what: &str) {
    let mut errors = Vec::new();
    validate(schema, value, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "{what}: the answer does not match docs/openapi.json:\n  {}\nthe answer: {value}",
        errors.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// A small JSON Schema validator (the 2020-12 keywords the document uses).

/// Keywords that only annotate.
const ANNOTATIONS: [&str; 5] = ["description", "title", "examples", "default", "$comment"];

/// Keywords [`validate`] checks.
const CHECKED: [&str; 13] = [
    "$ref",
    "type",
    "enum",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "format",
    "const",
];

/// Panics unless `schema` and every schema inside it use only keywords
/// [`validate`] checks or annotations.
fn check_keywords(schema: &Value, at: &str) {
    let Value::Object(schema) = schema else {
        return;
    };
    for (keyword, arg) in schema {
        assert!(
            CHECKED.contains(&keyword.as_str()) || ANNOTATIONS.contains(&keyword.as_str()),
            "{at}: docs/openapi.json uses the keyword {keyword:?}, which the validator of \
             tests/query_api.rs does not check: teach it before using it"
        );
        match keyword.as_str() {
            "properties" => {
                for (name, sub) in arg.as_object().expect("properties is an object") {
                    check_keywords(sub, &format!("{at}.{name}"));
                }
            }
            "items" | "additionalProperties" => check_keywords(arg, &format!("{at}/{keyword}")),
            _ => {}
        }
    }
}

/// Appends to `errors` each way `value` (at JSON path `at`) breaks `schema`.
/// A keyword it does not know is a failure of the test, not a pass.
fn validate(schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => return errors.push(format!("{at}: no value is allowed here")),
        Value::Object(schema) => schema,
        other => panic!("not a schema: {other}"),
    };
    for (keyword, arg) in schema {
        match keyword.as_str() {
            "$ref" => validate(
                resolve(arg.as_str().expect("a $ref is a string")),
                value,
                at,
                errors,
            ),
            "type" => {
                let types: Vec<&str> = match arg {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().map(|t| t.as_str().expect("a type")).collect(),
                    _ => panic!("bad type: {arg}"),
                };
                if !types.iter().any(|t| has_type(value, t)) {
                    errors.push(format!("{at}: {value} is not of type {arg}"));
                }
            }
            "enum" => {
                let allowed = arg.as_array().expect("an enum is an array");
                if !allowed.contains(value) {
                    errors.push(format!("{at}: {value} is not one of {arg}"));
                }
            }
            "properties" => {
                if let Value::Object(object) = value {
                    for (name, sub) in arg.as_object().expect("properties is an object") {
                        if let Some(v) = object.get(name) {
                            validate(sub, v, &format!("{at}.{name}"), errors);
                        }
                    }
                }
            }
            "required" => {
                if let Value::Object(object) = value {
                    for name in arg.as_array().expect("required is an array") {
                        let name = name.as_str().expect("a required name");
                        if !object.contains_key(name) {
                            errors.push(format!("{at}: required field {name:?} is missing"));
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Value::Object(object) = value {
                    let known = schema.get("properties").and_then(Value::as_object);
                    for (name, v) in object {
                        if known.is_some_and(|k| k.contains_key(name)) {
                            continue;
                        }
                        match arg {
                            Value::Bool(false) => errors.push(format!(
                                "{at}: field {name:?} is not documented (additionalProperties: false)"
                            )),
                            sub => validate(sub, v, &format!("{at}.{name}"), errors),
                        }
                    }
                }
            }
            "items" => {
                if let Value::Array(items) = value {
                    for (i, item) in items.iter().enumerate() {
                        validate(arg, item, &format!("{at}[{i}]"), errors);
                    }
                }
            }
            "minItems" | "maxItems" => {
                if let Value::Array(items) = value {
                    let n = arg.as_u64().expect("a count") as usize;
                    let ok = if keyword == "minItems" {
                        items.len() >= n
                    } else {
                        items.len() <= n
                    };
                    if !ok {
                        errors.push(format!("{at}: {} items breaks {keyword} {n}", items.len()));
                    }
                }
            }
            "minimum" | "maximum" => {
                if let Some(x) = value.as_f64() {
                    let bound = arg.as_f64().expect("a bound is a number");
                    let ok = if keyword == "minimum" {
                        x >= bound
                    } else {
                        x <= bound
                    };
                    if !ok {
                        errors.push(format!("{at}: {value} breaks {keyword} {bound}"));
                    }
                }
            }
            "const" => {
                if value != arg {
                    errors.push(format!("{at}: {value} is not {arg}"));
                }
            }
            "format" => {
                if let Value::String(s) = value
                    && !has_format(s, arg.as_str().expect("a format is a string"))
                {
                    errors.push(format!("{at}: {s:?} is not a {arg}"));
                }
            }
            k if ANNOTATIONS.contains(&k) => {}
            k => panic!(
                "docs/openapi.json uses the keyword {k:?}, which the validator of \
                 tests/query_api.rs does not check: teach it before using it"
            ),
        }
    }
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        // Written as an integer: a count written `1.0` is a bug.
        "integer" => value.is_i64() || value.is_u64(),
        other => panic!("unknown type {other:?}"),
    }
}

fn has_format(s: &str, format: &str) -> bool {
    match format {
        "date" => parse_day(s).is_some(),
        "date-time" => s.parse::<jiff::Timestamp>().is_ok(),
        "uuid" => uuid::Uuid::parse_str(s).is_ok(),
        other => panic!("unknown format {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Days and buckets.

/// `YYYY-MM-DD` → days since 1970-01-01 (a valid date only).
fn parse_day(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse::<i64>().ok())?
    };
    let (y, m, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let days = days_from_civil(y, m, d);
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + (m <= 2) as i64, m, d)
}

/// The index of the bucket holding `day` (days since the epoch).
fn bucket_index(bucket: &str, day: i64) -> i64 {
    match bucket {
        "day" => day,
        // 1970-01-05 was a Monday.
        "week" => (day - 4).div_euclid(7),
        "month" => {
            let (y, m, _) = civil_from_days(day);
            y * 12 + m - 1
        }
        other => panic!("unknown bucket {other}"),
    }
}

/// The day of an RFC 3339 UTC time.
fn day_of(time: &str) -> i64 {
    let t: jiff::Timestamp = time.parse().expect("an RFC 3339 time");
    t.as_millisecond().div_euclid(86_400_000)
}

// ---------------------------------------------------------------------------
// Checks shared by the tests.

/// `s` percent-encoded for a path segment.
fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A row's sort key: cohort, segment (null first, then bytes), group.
fn row_key(row: &Value) -> (String, Option<Vec<u8>>, String) {
    (
        row["cohort"].as_str().unwrap().to_string(),
        row["segment"].as_str().map(|s| s.as_bytes().to_vec()),
        row["group"].as_str().unwrap().to_string(),
    )
}

/// The contract's shape of a retention answer: rows strictly ordered,
/// cohorts the first day of their bucket, `retained` k + 1 entries whose
/// first is the size, null exactly for the buckets after the as-of time's.
fn check_retention(answer: &Value, bucket: &str, k: usize) {
    assert_eq!(answer["bucket"], bucket, "{answer}");
    let rows = answer["rows"].as_array().unwrap();
    for pair in rows.windows(2) {
        assert!(
            row_key(&pair[0]) < row_key(&pair[1]),
            "rows out of order: {} before {}",
            pair[0],
            pair[1]
        );
    }
    let last = bucket_index(bucket, day_of(answer["as_of"].as_str().unwrap()));
    for row in rows {
        let cohort = parse_day(row["cohort"].as_str().unwrap()).unwrap();
        let index = bucket_index(bucket, cohort);
        assert_eq!(
            index,
            bucket_index(bucket, cohort - 1) + 1,
            "not a bucket's first day: {row}"
        );
        let retained = row["retained"].as_array().unwrap();
        assert_eq!(retained.len(), k + 1, "{row}");
        assert_eq!(retained[0], row["size"], "{row}");
        for (j, entry) in retained.iter().enumerate() {
            let after = index + j as i64 > last;
            assert_eq!(
                entry.is_null(),
                after,
                "entry {j} of {row} (as of {})",
                answer["as_of"]
            );
        }
    }
}

/// The sum of the rows' sizes.
fn users(retention: &Value) -> i64 {
    let rows = retention["rows"].as_array().unwrap();
    rows.iter().map(|r| r["size"].as_i64().unwrap()).sum()
}

/// Counts that add up: per channel and per rule the same attempts, each
/// rate delivered / dispatched.
fn check_delivery(answer: &Value) {
    let mut sums = Vec::new();
    for by in ["channels", "rules"] {
        let mut sum = [0i64; 3];
        for (name, c) in answer[by].as_object().unwrap() {
            let n = ["dispatched", "delivered", "failed"].map(|f| c[f].as_i64().unwrap());
            assert!(n[1] + n[2] <= n[0], "{by}.{name}: {c}");
            let rate = c["success_rate"].as_f64().unwrap();
            assert_eq!(rate, n[1] as f64 / n[0] as f64, "{by}.{name}: {c}");
            for (total, x) in sum.iter_mut().zip(n) {
                *total += x;
            }
        }
        sums.push(sum);
    }
    assert_eq!(
        sums[0], sums[1],
        "channels and rules count the same attempts: {answer}"
    );
    let n = &answer["notifications"];
    assert!(n["succeeded"].as_i64() <= n["total"].as_i64(), "{answer}");
}

/// The spec's churn threshold.
fn threshold(fixture: &str) -> f64 {
    let path = root().join("fixtures").join(fixture).join("spec.toml");
    let spec: toml::Table = std::fs::read_to_string(path)
        .unwrap()
        .parse()
        .expect("the spec is TOML");
    spec["analytics"]["churn"]["threshold"].as_float().unwrap()
}

/// Every line of churn.jsonl is the answer for its user, ordered by user.
fn check_churn_lines(server: &Server, as_of: &str) -> Vec<Value> {
    let lines = server.out_churn();
    let users: Vec<&str> = lines.iter().map(|l| l["user"].as_str().unwrap()).collect();
    assert!(
        users.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes()),
        "{users:?}"
    );
    for line in &lines {
        let user = line["user"].as_str().unwrap();
        assert_eq!(line["as_of"], as_of, "{line}");
        let answer = server.ok(&format!("/v1/churn/users/{}", segment(user)));
        assert_eq!(
            answer, *line,
            "GET /v1/churn/users/{user} against churn.jsonl"
        );
    }
    lines
}

// ---------------------------------------------------------------------------
// The tests.

#[test]
fn retention_fixture_answers_as_documented_and_as_replay_out_wrote() {
    let server = serve(RETENTION, &[], &[]);

    // GET /v1/retention equals retention.json; the spec's bucket is week.
    let retention = server.ok("/v1/retention");
    assert_eq!(retention, server.out_json("retention.json"));
    let as_of = retention["as_of"].as_str().unwrap().to_string();
    assert_eq!(
        as_of, "2026-04-07T12:00:00.001Z",
        "1 ms after the last record"
    );
    check_retention(&retention, "week", 12);
    let rows = retention["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8, "{retention}");
    assert!(
        rows.iter().any(|r| r["segment"].is_null()),
        "a null segment row"
    );

    // Other buckets: the same users, in other cohorts.
    let month = server.ok("/v1/retention?bucket=month");
    check_retention(&month, "month", 12);
    let day = server.ok("/v1/retention?bucket=day");
    check_retention(&day, "day", 12);
    let week = server.ok("/v1/retention?bucket=week");
    assert_eq!(week, retention);
    for other in [&month, &day] {
        assert_eq!(other["as_of"], as_of.as_str());
        assert_eq!(users(other), users(&retention), "{other}");
    }
    assert!(month["rows"].as_array().unwrap().len() < rows.len());

    // k: k + 1 entries, a prefix of the default's.
    for k in [0usize, 2, 20] {
        let answer = server.ok(&format!("/v1/retention?k={k}"));
        check_retention(&answer, "week", k);
        let got = answer["rows"].as_array().unwrap();
        assert_eq!(got.len(), rows.len());
        for (a, b) in got.iter().zip(rows) {
            assert_eq!(row_key(a), row_key(b));
            let (a, b) = (
                a["retained"].as_array().unwrap(),
                b["retained"].as_array().unwrap(),
            );
            assert_eq!(a[..a.len().min(b.len())], b[..a.len().min(b.len())]);
        }
    }

    // segment: exactly that segment's rows.
    for s in ["gold", "silver", "5"] {
        let answer = server.ok(&format!("/v1/retention?segment={s}"));
        let expected: Vec<&Value> = rows.iter().filter(|r| r["segment"] == s).collect();
        assert!(!expected.is_empty());
        let got: Vec<&Value> = answer["rows"].as_array().unwrap().iter().collect();
        assert_eq!(got, expected, "segment={s}");
    }
    let none = server.ok("/v1/retention?segment=platinum");
    assert_eq!(none["rows"], serde_json::json!([]));
    let both = server.ok("/v1/retention?bucket=month&k=1&segment=silver");
    check_retention(&both, "month", 1);
    assert!(
        both["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["segment"] == "silver")
    );

    // Bad parameters: 400 {"error"}.
    for query in [
        "bucket=year",
        "k=abc",
        "k=-1",
        "k=1001",
        "foo=1",
        "bucket=week&limit=3",
    ] {
        server
            .get(&format!("/v1/retention?{query}"))
            .expect_error(400);
    }

    // GET /v1/churn/users/{u} equals its line of churn.jsonl, for every user.
    let lines = check_churn_lines(&server, &as_of);
    assert_eq!(lines.len(), 11, "u-01 … u-11");
    assert_eq!(
        lines.len() as i64,
        users(&retention),
        "every active user in one cohort"
    );
    let encoded = server.ok("/v1/churn/users/u%2D01");
    assert_eq!(encoded["user"], "u-01", "a percent-encoded user id");
    // Never active (only non-activity events), and unknown: 404 {"error"}.
    for user in ["u-12", "nobody", "u%20-%2001"] {
        server
            .get(&format!("/v1/churn/users/{user}"))
            .expect_error(404);
    }

    // At risk: none is below 0.3 this early; every user listed would be.
    let at_risk = server.ok("/v1/churn/at-risk");
    assert_eq!(at_risk["as_of"], as_of.as_str());
    let threshold = threshold(RETENTION);
    let below: Vec<&Value> = lines
        .iter()
        .filter(|l| l["p_alive"].as_f64().unwrap() < threshold)
        .collect();
    assert_eq!(
        at_risk["users"].as_array().unwrap().len(),
        below.len(),
        "{at_risk}"
    );
    assert_eq!(
        server.ok("/v1/churn/at-risk?limit=1")["users"]
            .as_array()
            .unwrap()
            .len(),
        below.len().min(1)
    );
    for query in ["limit=abc", "limit=-1", "top=3"] {
        server
            .get(&format!("/v1/churn/at-risk?{query}"))
            .expect_error(400);
    }

    // GET /v1/delivery equals delivery.json.
    let delivery = server.ok("/v1/delivery");
    assert_eq!(delivery, server.out_json("delivery.json"));
    check_delivery(&delivery);

    // GET /v1/report: the same answers, the histogram of every active user.
    let report = server.ok("/v1/report");
    assert_eq!(report["as_of"], as_of.as_str());
    assert_eq!(report["retention"], retention);
    assert_eq!(report["delivery"], delivery);
    let counts = report["p_alive"]["counts"].as_array().unwrap();
    let total: u64 = counts.iter().map(|c| c.as_u64().unwrap()).sum();
    assert_eq!(total, lines.len() as u64);
    assert!(report["at_risk"].is_array());

    // GET /: the report page.
    let page = server.get("/");
    assert_eq!(page.status, 200);
    assert_eq!(media_type(&page.content_type), "text/html");
    assert!(
        page.body.contains("<title>nudgeflow report</title>"),
        "the report page"
    );
    assert!(
        page.body.contains("/v1/report"),
        "the page fetches /v1/report"
    );

    // What `replay --serve` answers of the live job's routes.
    server.get("/v1/users/u-01/inbox").expect_error(404);
    server
        .get("/v1/users/u-01/inbox?unread=true&limit=5")
        .expect_error(404);
    let id = "00000000-0000-0000-0000-000000000000";
    let read = format!("/v1/users/u-01/inbox/{id}/read");
    server
        .request("POST", &read, Auth::Default, None)
        .expect_error(404);
    let receipt =
        format!(r#"[{{"dispatch_id":"{id}","status":"delivered","time":"2026-04-07T12:00:00Z"}}]"#);
    let receipts = server.request("POST", "/v1/receipts", Auth::Default, Some(&receipt));
    receipts.expect_error(503);

    // Operations.
    let metrics = server.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    assert_eq!(server.get("/healthz").status, 200);
    assert_eq!(
        server.get("/readyz").status,
        200,
        "replay --serve is ready once it serves"
    );

    // Unknown routes: 404 {"error"} (checked in `request`).
    for path in [
        "/v1/nope",
        "/v1/retention/",
        "/v1/churn/users/",
        "/v1/churn",
        "/v2/retention",
    ] {
        server.get(path);
    }

    server.assert_every_v1_get_exercised();
}

#[test]
fn delivery_fixture_has_no_churn_table() {
    let server = serve(DELIVERY, &[], &[]);
    let delivery = server.ok("/v1/delivery");
    assert_eq!(delivery, server.out_json("delivery.json"));
    assert_eq!(delivery["as_of"], "2026-05-12T10:00:00.001Z");
    check_delivery(&delivery);
    let channels: Vec<&String> = delivery["channels"].as_object().unwrap().keys().collect();
    assert_eq!(channels, ["email", "in_app", "push", "sms", "webhook"]);
    assert_eq!(
        delivery["notifications"],
        serde_json::json!({"total": 13, "succeeded": 9})
    );

    let retention = server.ok("/v1/retention");
    assert_eq!(retention, server.out_json("retention.json"));
    check_retention(&retention, "week", 12);

    // No [analytics.churn]: no churn.jsonl, and 404 {"error"} for its routes.
    assert!(!server.out.join("churn.jsonl").exists());
    for path in [
        "/v1/churn/users/u-01",
        "/v1/churn/users/u-07",
        "/v1/churn/at-risk",
        "/v1/churn/at-risk?limit=1",
    ] {
        server.get(path).expect_error(404);
    }

    let report = server.ok("/v1/report");
    assert_eq!(report["retention"], retention);
    assert_eq!(report["delivery"], delivery);
    assert!(
        report["p_alive"].is_null() && report["at_risk"].is_null(),
        "{report}"
    );
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn the_bearer_token_guards_the_answers() {
    let token = "t0k3n-for-the-test";
    let mut server = serve(
        RETENTION,
        &["--token-env", "NUDGEFLOW_QUERY_API_TEST_TOKEN"],
        &[("NUDGEFLOW_QUERY_API_TEST_TOKEN", token)],
    );
    for path in [
        "/v1/retention",
        "/v1/delivery",
        "/v1/churn/users/u-01",
        "/v1/churn/at-risk",
        "/v1/report",
        "/metrics",
    ] {
        for auth in [Auth::None, Auth::Bearer("wrong"), Auth::Bearer("")] {
            let denied = server.request("GET", path, auth, None);
            denied.expect_error(401);
            let challenge = denied.headers.get(reqwest::header::WWW_AUTHENTICATE);
            assert_eq!(
                challenge.map(|v| v.to_str().unwrap()),
                Some("Bearer"),
                "{path}"
            );
        }
        let allowed = server.request("GET", path, Auth::Bearer(token), None);
        assert_eq!(allowed.status, 200, "{path}: {allowed:?}");
    }
    // A token outside the header is no token.
    let query = format!("/v1/retention?token={token}");
    server
        .request("GET", &query, Auth::None, None)
        .expect_error(401);
    // The page and the probes need none.
    for path in ["/", "/healthz", "/readyz"] {
        assert_eq!(
            server.request("GET", path, Auth::None, None).status,
            200,
            "{path}"
        );
    }
    server.token = Some(token.to_string());
    assert_eq!(
        server.ok("/v1/retention"),
        server.out_json("retention.json")
    );
    assert_eq!(server.ok("/v1/delivery"), server.out_json("delivery.json"));
    // With the token, errors are the same as without one.
    server.get("/v1/retention?bucket=year").expect_error(400);
    server.get("/v1/churn/users/u-12").expect_error(404);
}

#[test]
fn as_of_earlier_than_the_data_counts_only_what_came_before() {
    // A Sunday: weeks W0..W2 (from 2026-03-02) are complete or under way;
    // u-10 was erased on 03-20 and is not active again until 03-24.
    let server = serve(RETENTION, &["--as-of", "2026-03-22T00:00:00Z"], &[]);
    let as_of = "2026-03-22T00:00:00.000Z";
    let full_dir = root().join("fixtures").join(RETENTION).join("expected");
    let full = |name: &str| -> Value {
        let text = std::fs::read_to_string(full_dir.join(name)).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let full_retention = full("retention.json");

    let retention = server.ok("/v1/retention");
    assert_eq!(retention, server.out_json("retention.json"));
    assert_eq!(retention["as_of"], as_of);
    check_retention(&retention, "week", 12);
    let rows = retention["rows"].as_array().unwrap();
    let full_rows = full_retention["rows"].as_array().unwrap();
    assert!(rows.len() < full_rows.len(), "{retention}");
    assert!(users(&retention) < users(&full_retention), "{retention}");
    let known = |r: &Value| {
        r["retained"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| !e.is_null())
            .count()
    };
    let entries: usize = rows.iter().map(known).sum();
    assert!(entries < full_rows.iter().map(known).sum::<usize>());
    assert!(
        rows.iter()
            .all(|r| r["cohort"].as_str().unwrap() <= "2026-03-16")
    );

    let delivery = server.ok("/v1/delivery");
    assert_eq!(delivery, server.out_json("delivery.json"));
    assert_eq!(delivery["as_of"], as_of);
    check_delivery(&delivery);

    let lines = check_churn_lines(&server, as_of);
    assert!(lines.len() < users(&full_retention) as usize);
    assert_eq!(lines.len() as i64, users(&retention));
    for line in &lines {
        assert!(
            line["last_active"].as_str().unwrap() < "2026-03-22",
            "{line}"
        );
    }
    // Erased on 03-20 and not active since: 404, like a user never active.
    assert!(!lines.iter().any(|l| l["user"] == "u-10"));
    server.get("/v1/churn/users/u-10").expect_error(404);
    // u-11 is erased only on 03-31: still its first life.
    let u11 = server.ok("/v1/churn/users/u-11");
    assert_eq!(
        (u11["first_active"].as_str(), u11["last_active"].as_str()),
        (Some("2026-03-03"), Some("2026-03-03"))
    );

    let at_risk = server.ok("/v1/churn/at-risk");
    assert_eq!(at_risk["as_of"], as_of);
    let report = server.ok("/v1/report");
    assert_eq!(report["as_of"], as_of);
    assert_eq!(report["retention"], retention);
}

#[test]
fn at_risk_lists_users_below_the_threshold_lowest_first() {
    // Months after the last record: several users have fallen below 0.3.
    let server = serve(RETENTION, &["--as-of", "2026-09-01T00:00:00Z"], &[]);
    let as_of = "2026-09-01T00:00:00.000Z";
    let threshold = threshold(RETENTION);
    let lines = check_churn_lines(&server, as_of);

    let at_risk = server.ok("/v1/churn/at-risk");
    assert_eq!(at_risk["as_of"], as_of);
    let listed = at_risk["users"].as_array().unwrap();
    assert!(listed.len() >= 2, "{at_risk}");
    let by_user: BTreeMap<&str, &Value> = lines
        .iter()
        .map(|l| (l["user"].as_str().unwrap(), l))
        .collect();
    for entry in listed {
        let p = entry["p_alive"].as_f64().unwrap();
        assert!(p < threshold, "{entry} is not below {threshold}");
        let churn = by_user[entry["user"].as_str().unwrap()];
        assert_eq!(
            entry["p_alive"], churn["p_alive"],
            "{entry} against {churn}"
        );
        assert_eq!(
            entry["last_active"], churn["last_active"],
            "{entry} against {churn}"
        );
    }
    for pair in listed.windows(2) {
        let key = |e: &Value| {
            (
                e["p_alive"].as_f64().unwrap(),
                e["user"].as_str().unwrap().as_bytes().to_vec(),
            )
        };
        let (a, b) = (key(&pair[0]), key(&pair[1]));
        assert!(
            a.0 < b.0 || (a.0 == b.0 && a.1 < b.1),
            "out of order: {} before {}",
            pair[0],
            pair[1]
        );
    }
    // Every user below the threshold is listed (fewer than the default limit).
    let below: BTreeSet<&str> = lines
        .iter()
        .filter(|l| l["p_alive"].as_f64().unwrap() < threshold)
        .map(|l| l["user"].as_str().unwrap())
        .collect();
    let got: BTreeSet<&str> = listed.iter().map(|e| e["user"].as_str().unwrap()).collect();
    assert_eq!(got, below);

    let one = server.ok("/v1/churn/at-risk?limit=1");
    assert_eq!(one["users"], serde_json::json!([listed[0]]));
    let none = server.ok("/v1/churn/at-risk?limit=0");
    assert_eq!(none["users"], serde_json::json!([]));
    let many = server.ok("/v1/churn/at-risk?limit=1000");
    assert_eq!(many, at_risk);

    // The report's series ends with the same number of users at risk.
    let report = server.ok("/v1/report");
    let series = report["at_risk"].as_array().unwrap();
    assert_eq!(
        series.last().unwrap()["users"],
        listed.len() as i64,
        "{report}"
    );
}

/// DESIGN.md §8: "errors are `{"error": "…"}` with a 4xx or 5xx status" —
/// also those the router and the extractors answer before a handler runs.
#[test]
fn errors_outside_the_handlers_are_json_too() {
    let server = serve(DELIVERY, &[], &[]);
    let mut failures = Vec::new();
    let requests = [
        ("POST", "/v1/retention"),
        ("DELETE", "/v1/delivery"),
        ("POST", "/healthz"),
        ("GET", "/v1/churn/users/%FF"),
        ("GET", "/v1/users/%FF/inbox"),
    ];
    for (method, path) in requests {
        let answer = server.send(method, path, Auth::Default, None);
        let json = serde_json::from_str::<Value>(&answer.body).ok();
        let is_error = (400..600).contains(&answer.status)
            && media_type(&answer.content_type) == "application/json"
            && json
                .as_ref()
                .and_then(|j| j.as_object())
                .is_some_and(|o| o.len() == 1 && o.get("error").is_some_and(Value::is_string));
        if !is_error {
            failures.push(format!(
                "{method} {path} → {} {:?} {:?}",
                answer.status, answer.content_type, answer.body
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "not a JSON error:\n  {}",
        failures.join("\n  ")
    );
}

#[test]
fn the_document_is_openapi_3_1_with_every_route() {
    assert_eq!(DOC["openapi"], "3.1.0");
    let mut routes: Vec<String> = Vec::new();
    for (path, item) in DOC["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.push(format!("{} {path}", method.to_ascii_uppercase()));
        }
    }
    routes.sort();
    let mut expected = vec![
        "GET /",
        "GET /healthz",
        "GET /metrics",
        "GET /readyz",
        "GET /v1/churn/at-risk",
        "GET /v1/churn/users/{user}",
        "GET /v1/delivery",
        "GET /v1/report",
        "GET /v1/retention",
        "GET /v1/users/{user}/inbox",
        "POST /v1/receipts",
        "POST /v1/users/{user}/inbox/{dispatch_id}/read",
    ];
    expected.sort();
    assert_eq!(routes, expected);
    let scheme = &DOC["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(
        (scheme["type"].as_str(), scheme["scheme"].as_str()),
        (Some("http"), Some("bearer"))
    );
    // Every reference resolves, and every schema uses only keywords the
    // validator checks.
    fn walk(v: &Value) {
        match v {
            Value::Object(o) => {
                if let Some(r) = o.get("$ref").and_then(Value::as_str) {
                    resolve(r);
                }
                o.values().for_each(walk);
            }
            Value::Array(a) => a.iter().for_each(walk),
            _ => {}
        }
    }
    walk(&DOC);
    for (name, schema) in DOC["components"]["schemas"].as_object().unwrap() {
        check_keywords(schema, name);
    }
    for (path, item) in DOC["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let response = response_object(response);
                for (media, content) in response["content"].as_object().unwrap() {
                    let at = format!("{method} {path} {status} {media}");
                    check_keywords(&content["schema"], &at);
                }
            }
        }
    }
}
