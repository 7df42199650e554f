//! The query API of the aggregates (DESIGN.md §8): `GET /v1/retention`,
//! `/v1/churn/users/{user}`, `/v1/churn/at-risk`, `/v1/delivery`, and the
//! report's data, `/v1/report`. Each answer reads the process's
//! [`AnalyticsView`] once, so it is consistent as of its `as_of`; the
//! answers themselves are `analytics::answers`.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use axum::extract::rejection::PathRejection;

use super::http::{Ops, error, path_param, query_pairs};
use crate::analytics::answers::{self, DEFAULT_K};
use crate::dataflow::aggregates::{Aggregates, AnalyticsView};
use crate::spec::{Bucket, Churn};
use crate::time::Time;

/// Users `GET /v1/churn/at-risk` lists without `limit`.
pub const DEFAULT_AT_RISK: usize = 100;

/// The view, once it answers: after the token check, with the spec's
/// analytics and some as-of time; else the error to answer.
fn view<'o>(ops: &'o Ops, headers: &HeaderMap) -> Result<&'o AnalyticsView, Response> {
    if let Some(denied) = ops.unauthorized(headers) {
        return Err(denied);
    }
    let Some(view) = ops.analytics.as_ref() else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "the spec has no [analytics] table: nothing of DESIGN.md §5 is computed",
        ));
    };
    if view.read().as_of == Time::MIN {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no answer yet: the job has not completed any event time",
        ));
    }
    Ok(view)
}

fn churn_model(view: &AnalyticsView) -> Result<&Churn, Response> {
    view.spec
        .analytics
        .as_ref()
        .and_then(|a| a.churn.as_ref())
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                "the spec has no [analytics.churn] table: no churn risk is computed",
            )
        })
}

/// An answer, its keys in the order DESIGN.md §8 lists them.
fn ok<T: serde::Serialize>(answer: &T) -> Response {
    use axum::response::IntoResponse;
    let body = serde_json::to_string(answer).expect("answers serialize");
    let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
    (StatusCode::OK, json, body).into_response()
}

/// `GET /v1/retention?bucket=week&k=12&segment=S`.
pub(super) async fn retention(
    State(ops): State<Ops>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let view = match view(&ops, &headers) {
        Ok(view) => view,
        Err(e) => return e,
    };
    let analytics = view.spec.analytics.as_ref().expect("a view has analytics");
    let (mut bucket, mut k, mut segment) = (analytics.bucket, DEFAULT_K, None);
    for (key, value) in query_pairs(&query) {
        match key.as_str() {
            "bucket" => match Bucket::ALL.into_iter().find(|b| b.as_str() == value) {
                Some(b) => bucket = b,
                None => {
                    return error(StatusCode::BAD_REQUEST, "bucket is day, week or month");
                }
            },
            "k" => match value.parse::<u32>() {
                Ok(n) if n <= 1000 => k = n,
                _ => return error(StatusCode::BAD_REQUEST, "k is a whole number up to 1000"),
            },
            "segment" => segment = Some(value),
            other => {
                let message =
                    format!("unknown parameter {other:?}; retention takes bucket, k and segment");
                return error(StatusCode::BAD_REQUEST, &message);
            }
        }
    }
    let agg = view.read();
    ok(&answers::retention(&agg, bucket, k, segment.as_deref()))
}

/// `GET /v1/churn/users/{user}`.
pub(super) async fn churn_user(
    State(ops): State<Ops>,
    headers: HeaderMap,
    user: Result<Path<String>, PathRejection>,
) -> Response {
    let (view, churn) = match view(&ops, &headers).and_then(|v| Ok((v, churn_model(v)?))) {
        Ok(found) => found,
        Err(e) => return e,
    };
    let user = match path_param(user) {
        Ok(user) => user,
        Err(e) => return e,
    };
    let agg = view.read();
    match answers::churn_user(churn, &agg, &user) {
        Some(answer) => ok(&answer),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("{user:?} has no activity (or none since an erasure)"),
        ),
    }
}

/// `GET /v1/churn/at-risk?limit=N`.
pub(super) async fn at_risk(
    State(ops): State<Ops>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let (view, churn) = match view(&ops, &headers).and_then(|v| Ok((v, churn_model(v)?))) {
        Ok(found) => found,
        Err(e) => return e,
    };
    let mut limit = DEFAULT_AT_RISK;
    for (key, value) in query_pairs(&query) {
        match (key.as_str(), value.parse()) {
            ("limit", Ok(n)) => limit = n,
            ("limit", Err(_)) => return error(StatusCode::BAD_REQUEST, "limit is a whole number"),
            (other, _) => {
                let message = format!("unknown parameter {other:?}; at-risk takes limit");
                return error(StatusCode::BAD_REQUEST, &message);
            }
        }
    }
    let agg = view.read();
    ok(&answers::at_risk_answer(churn, &agg, limit))
}

/// `GET /v1/delivery`.
pub(super) async fn delivery(State(ops): State<Ops>, headers: HeaderMap) -> Response {
    match view(&ops, &headers) {
        Ok(view) => ok(&answers::delivery(&view.spec, &view.read())),
        Err(e) => e,
    }
}

/// Seconds between the live report page's refreshes.
const REFRESH_SECONDS: u32 = 5;

/// `GET /`: the report page, drawing `/v1/report` and refreshing. The page
/// itself needs no token (it holds no data); with a token configured, open
/// it as `/#token=TOKEN` and it sends the token with each fetch.
pub(super) async fn page(State(ops): State<Ops>) -> Response {
    use axum::response::IntoResponse;
    if ops.analytics.is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "the spec has no [analytics] table: there is no report",
        );
    }
    axum::response::Html(crate::report::live_page(REFRESH_SECONDS)).into_response()
}

/// `GET /v1/report`: everything the report page draws.
pub(super) async fn report(State(ops): State<Ops>, headers: HeaderMap) -> Response {
    match view(&ops, &headers) {
        Ok(view) => {
            let agg: std::sync::RwLockReadGuard<'_, Aggregates> = view.read();
            ok(&answers::report(&view.spec, &agg, view.title.clone()))
        }
        Err(e) => e,
    }
}
