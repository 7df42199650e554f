//! `nudgeflow query`: asks a running job's query API (DESIGN.md §8; `run`
//! or `replay --serve`) and prints the answer as readable tables.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use serde_json::Value;

/// What to ask.
#[derive(Clone, Debug)]
pub enum Question {
    /// `GET /v1/retention`, with optional bucket, k and segment.
    Retention {
        bucket: Option<String>,
        k: Option<u32>,
        segment: Option<String>,
    },
    /// `GET /v1/churn/users/{user}`.
    Churn { user: String },
    /// `GET /v1/churn/at-risk`.
    AtRisk { limit: Option<usize> },
    /// `GET /v1/delivery`.
    Delivery,
}

impl Question {
    /// The request's path and query.
    fn path(&self) -> String {
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        match self {
            Question::Retention { bucket, k, segment } => {
                let mut params = Vec::new();
                if let Some(b) = bucket {
                    params.push(format!("bucket={}", encode(b)));
                }
                if let Some(k) = k {
                    params.push(format!("k={k}"));
                }
                if let Some(s) = segment {
                    params.push(format!("segment={}", encode(s)));
                }
                match params.is_empty() {
                    true => "/v1/retention".into(),
                    false => format!("/v1/retention?{}", params.join("&")),
                }
            }
            Question::Churn { user } => format!(
                "/v1/churn/users/{}",
                url::form_urlencoded::byte_serialize(user.as_bytes())
                    .collect::<String>()
                    .replace('+', "%20")
            ),
            Question::AtRisk { limit: None } => "/v1/churn/at-risk".into(),
            Question::AtRisk { limit: Some(n) } => format!("/v1/churn/at-risk?limit={n}"),
            Question::Delivery => "/v1/delivery".into(),
        }
    }
}

/// An answer: its JSON, and its text as it came.
pub struct Answer {
    pub json: Value,
    pub text: String,
}

/// Asks `base` (e.g. `http://127.0.0.1:9464`) and returns the answer, or
/// the API's error with its status.
pub fn ask(base: &str, question: &Question, token: Option<&str>) -> anyhow::Result<Answer> {
    let url = format!("{}{}", base.trim_end_matches('/'), question.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        let mut request = client.get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {url} (is the job running?)"))?;
        let status = response.status();
        let body = response.text().await?;
        let value: Value = serde_json::from_str(&body)
            .with_context(|| format!("{url} answered {status} with something not JSON"))?;
        if !status.is_success() {
            let message = value["error"].as_str().unwrap_or("(no message)");
            bail!("{url} answered {status}: {message}");
        }
        Ok(Answer {
            json: value,
            text: body,
        })
    })
}

/// The answer to `question` as text tables.
pub fn render(question: &Question, answer: &Value) -> String {
    let mut out = String::new();
    let as_of = answer["as_of"].as_str().unwrap_or("?");
    match question {
        Question::Retention { .. } => {
            let bucket = answer["bucket"].as_str().unwrap_or("?");
            let _ = writeln!(out, "retention by {bucket}, as of {as_of}");
            let rows = answer["rows"].as_array().cloned().unwrap_or_default();
            let k = rows
                .iter()
                .map(|r| r["retained"].as_array().map_or(0, Vec::len))
                .max()
                .unwrap_or(0);
            let mut header = vec![
                "cohort".to_string(),
                "segment".into(),
                "group".into(),
                "size".into(),
            ];
            header.extend((1..k).map(|j| format!("+{j}")));
            let mut table = vec![header];
            for r in &rows {
                let size = r["size"].as_i64().unwrap_or(0);
                let mut line = vec![
                    r["cohort"].as_str().unwrap_or("").to_string(),
                    r["segment"].as_str().unwrap_or("-").to_string(),
                    r["group"].as_str().unwrap_or("").to_string(),
                    size.to_string(),
                ];
                for v in r["retained"].as_array().into_iter().flatten().skip(1) {
                    line.push(match v.as_i64() {
                        Some(n) if size > 0 => format!("{:.0}%", 100.0 * n as f64 / size as f64),
                        _ => "".into(),
                    });
                }
                table.push(line);
            }
            write_table(&mut out, &table, 3);
            if rows.is_empty() {
                out.push_str("(no cohorts)\n");
            }
        }
        Question::Churn { .. } => {
            for key in [
                "user",
                "p_alive",
                "x",
                "t_x",
                "T",
                "first_active",
                "last_active",
                "as_of",
            ] {
                let v = &answer[key];
                let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                let _ = writeln!(out, "{key:>12}  {text}");
            }
        }
        Question::AtRisk { .. } => {
            let _ = writeln!(out, "users at risk, lowest P(alive) first, as of {as_of}");
            let mut table = vec![vec![
                "user".to_string(),
                "p_alive".into(),
                "last_active".into(),
            ]];
            for u in answer["users"].as_array().into_iter().flatten() {
                table.push(vec![
                    u["user"].as_str().unwrap_or("").to_string(),
                    format!("{:.4}", u["p_alive"].as_f64().unwrap_or(f64::NAN)),
                    u["last_active"].as_str().unwrap_or("").to_string(),
                ]);
            }
            write_table(&mut out, &table, 1);
        }
        Question::Delivery => {
            let _ = writeln!(out, "delivery as of {as_of}");
            for (what, key) in [("channel", "channels"), ("rule", "rules")] {
                let mut table = vec![vec![
                    what.to_string(),
                    "dispatched".into(),
                    "delivered".into(),
                    "failed".into(),
                    "success".into(),
                ]];
                for (name, c) in answer[key].as_object().into_iter().flatten() {
                    table.push(vec![
                        name.clone(),
                        c["dispatched"].to_string(),
                        c["delivered"].to_string(),
                        c["failed"].to_string(),
                        format!("{:.1}%", 100.0 * c["success_rate"].as_f64().unwrap_or(0.0)),
                    ]);
                }
                out.push('\n');
                write_table(&mut out, &table, 1);
            }
            let n = &answer["notifications"];
            let _ = writeln!(
                out,
                "\nnotifications: {} made, {} succeeded",
                n["total"], n["succeeded"]
            );
        }
    }
    out
}

/// The first `left` columns left-aligned, the rest right-aligned.
fn write_table(out: &mut String, rows: &[Vec<String>], left: usize) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            if c < left {
                let _ = write!(line, "{cell:<w$}", w = widths[c]);
            } else {
                let _ = write!(line, "{cell:>w$}", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_carry_the_parameters_encoded() {
        let q = Question::Retention {
            bucket: Some("month".into()),
            k: Some(3),
            segment: Some("a b&c".into()),
        };
        assert_eq!(q.path(), "/v1/retention?bucket=month&k=3&segment=a+b%26c");
        let q = Question::Churn {
            user: "u 1/2".into(),
        };
        assert_eq!(q.path(), "/v1/churn/users/u%201%2F2");
    }

    #[test]
    fn retention_renders_shares_of_the_cohort() {
        let answer = serde_json::json!({"as_of": "t", "bucket": "week", "rows": [
            {"cohort": "2026-03-02", "segment": null, "group": "treated", "size": 4, "retained": [4, 2, null]}
        ]});
        let q = Question::Retention {
            bucket: None,
            k: None,
            segment: None,
        };
        let text = render(&q, &answer);
        assert!(
            text.contains("2026-03-02  -        treated     4  50%"),
            "{text}"
        );
    }
}
