//! The HTTP endpoints of the live job: `GET /metrics` (OpenMetrics text;
//! behind the bearer token when one is configured), `GET /healthz` (200
//! while the process runs) and `GET /readyz` (200 once every partition has
//! been caught up once, 503 before), `POST /v1/receipts`, the provider
//! callbacks (`callbacks.rs`), and the in-app inbox: `GET
//! /v1/users/{user}/inbox` and `POST /v1/users/{user}/inbox/{id}/read`
//! (`dataflow::inbox`; DESIGN.md §9). All but the probes are behind the
//! token when one is configured. They run on a
//! one-thread tokio runtime of their own ([`spawn`]). Errors are
//! `{"error": "…"}` (DESIGN.md §8).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::callbacks::{self, ReceiptsTopic};
use super::metrics::Metrics;
use super::query;
use crate::dataflow::aggregates::AnalyticsView;
use crate::dataflow::inbox::InboxView;

/// Whether the job is ready; clones share it.
#[derive(Clone, Default)]
pub struct Health(Arc<AtomicBool>);

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    pub fn set_ready(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The views of the dataflow's state the API answers from, each kept by
/// the first worker of this process; `None` when the job keeps none.
#[derive(Clone, Default)]
pub struct Views {
    pub inbox: Option<InboxView>,
    pub analytics: Option<AnalyticsView>,
}

#[derive(Clone)]
pub(super) struct Ops {
    metrics: Metrics,
    health: Health,
    token: Option<Arc<str>>,
    receipts: Option<Arc<ReceiptsTopic>>,
    inbox: Option<InboxView>,
    pub(super) analytics: Option<AnalyticsView>,
}

impl Ops {
    /// `None` when the request may go on; else the 401 to answer.
    pub(super) fn unauthorized(&self, headers: &HeaderMap) -> Option<Response> {
        let token = self.token.as_deref()?;
        // The scheme's name is case-insensitive (RFC 9110 §11.1).
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim_start());
        (given != Some(token)).then(|| {
            let mut denied = error(
                StatusCode::UNAUTHORIZED,
                "a bearer token is required (Authorization: Bearer <token>)",
            );
            let bearer = header::HeaderValue::from_static("Bearer");
            denied
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, bearer);
            denied
        })
    }
}

async fn metrics(State(ops): State<Ops>, headers: HeaderMap) -> Response {
    if let Some(denied) = ops.unauthorized(&headers) {
        return denied;
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ops.metrics.encode(),
    )
        .into_response()
}

/// A JSON answer.
pub(super) fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    let body = serde_json::to_string(body).expect("a JSON value serialises");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// An error as the API writes them: `{"error": "…"}`.
pub(super) fn error(status: StatusCode, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

async fn receipts(State(ops): State<Ops>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(denied) = ops.unauthorized(&headers) {
        return denied;
    }
    let Some(topic) = ops.receipts.as_deref() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "receipts are taken by the live job (`nudgeflow run`) only",
        );
    };
    let answer = callbacks::post(topic, &body).await;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, &answer.body)
}

/// The `key=value` pairs of a query string, decoded.
pub(super) fn query_pairs(query: &Option<String>) -> Vec<(String, String)> {
    let query = query.as_deref().unwrap_or("");
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

async fn inbox(
    State(ops): State<Ops>,
    headers: HeaderMap,
    user: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(denied) = ops.unauthorized(&headers) {
        return denied;
    }
    let user = match path_param(user) {
        Ok(user) => user,
        Err(e) => return e,
    };
    let Some(view) = ops.inbox.as_ref() else {
        return error(StatusCode::NOT_FOUND, "this job keeps no inbox");
    };
    let (mut unread, mut limit) = (false, usize::MAX);
    for (key, value) in query_pairs(&query) {
        match key.as_str() {
            "unread" => match value.as_str() {
                "true" => unread = true,
                "false" => unread = false,
                _ => return error(StatusCode::BAD_REQUEST, "unread is true or false"),
            },
            "limit" => match value.parse() {
                Ok(n) => limit = n,
                Err(_) => {
                    return error(StatusCode::BAD_REQUEST, "limit is a whole number");
                }
            },
            other => {
                let message =
                    format!("unknown parameter {other:?}; the inbox takes unread and limit");
                return error(StatusCode::BAD_REQUEST, &message);
            }
        }
    }
    json(StatusCode::OK, &view.answer(&user, unread, limit))
}

async fn inbox_read(
    State(ops): State<Ops>,
    headers: HeaderMap,
    params: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    if let Some(denied) = ops.unauthorized(&headers) {
        return denied;
    }
    let (user, dispatch_id) = match path_param(params) {
        Ok(params) => params,
        Err(e) => return e,
    };
    let (Some(view), Some(topic)) = (ops.inbox.as_ref(), ops.receipts.as_deref()) else {
        return error(StatusCode::NOT_FOUND, "this job keeps no inbox");
    };
    let id = crate::dataflow::route::parse_dispatch_id(&dispatch_id);
    if !id.is_some_and(|id| view.holds(&user, id)) {
        let message = format!("{user:?}'s inbox holds no dispatch {dispatch_id:?}");
        return error(StatusCode::NOT_FOUND, &message);
    }
    let time = crate::time::format_rfc3339(crate::time::now_ms());
    let receipt = serde_json::json!({"dispatch_id": dispatch_id, "status": "opened", "time": time});
    let body = serde_json::to_vec(&[receipt]).expect("a JSON value serialises");
    let answer = callbacks::post(topic, &body).await;
    if answer.status != 200 {
        let status =
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return json(status, &answer.body);
    }
    json(
        StatusCode::OK,
        &serde_json::json!({"dispatch_id": dispatch_id, "opened": time}),
    )
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such route")
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method",
    )
}

/// A path's parameters, or the 400 (as JSON) for a path that is not
/// valid (not UTF-8, say).
pub(super) fn path_param<T>(p: Result<Path<T>, PathRejection>) -> Result<T, Response> {
    p.map(|Path(t)| t)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &e.body_text()))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(ops): State<Ops>) -> Response {
    if ops.health.is_ready() {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// The routes: operations, and the provider callbacks when the job
/// writes a receipts topic.
pub fn routes(
    metrics: Metrics,
    health: Health,
    token: Option<String>,
    receipts: Option<Arc<ReceiptsTopic>>,
    views: Views,
) -> Router {
    let ops = Ops {
        metrics,
        health,
        token: token.map(Arc::from),
        receipts,
        inbox: views.inbox,
        analytics: views.analytics,
    };
    Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/receipts", post(self::receipts))
        .route("/v1/users/{user}/inbox", get(self::inbox))
        .route(
            "/v1/users/{user}/inbox/{dispatch_id}/read",
            post(inbox_read),
        )
        .route("/v1/retention", get(query::retention))
        .route("/v1/churn/users/{user}", get(query::churn_user))
        .route("/v1/churn/at-risk", get(query::at_risk))
        .route("/v1/delivery", get(query::delivery))
        .route("/v1/report", get(query::report))
        .route("/", get(query::page))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(ops)
}

/// The running server; stopped when dropped.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds `listen` (port 0: any free port) and serves the routes on a
/// thread of its own until the returned [`Running`] is dropped.
pub fn spawn(
    listen: SocketAddr,
    token: Option<String>,
    metrics: Metrics,
    health: Health,
    receipts: Option<Arc<ReceiptsTopic>>,
    views: Views,
) -> std::io::Result<Running> {
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = routes(metrics, health, token, receipts, views);
    let thread = std::thread::Builder::new()
        .name("nudgeflow-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot serve HTTP");
                        return;
                    }
                };
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "HTTP server failed");
                }
            })
        })?;
    Ok(Running {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}
