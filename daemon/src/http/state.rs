//! What the HTTP handlers share: the state, the error answer, the JSON body
//! extractor, the page-access marker and the session cookie's name. A leaf
//! of the HTTP layer: the API, authentication and the OpenAPI document all
//! use it, it uses none of them.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use crate::audit::Audit;
use crate::evaluate::{Evaluator, Request as EvalRequest};
use crate::ingest::Stats;
use crate::registry::Registry;
use crate::store::KvStore;

/// The session cookie's name.
pub const COOKIE: &str = "coldchain_session";

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Arc<KvStore>,
    /// Ingest counters.
    pub stats: Arc<Stats>,
    /// Registered devices.
    pub registry: Registry,
    /// Read-only evaluation of shipments (the evaluator task owns changes).
    pub reader: Arc<Evaluator>,
    /// Changes go to the evaluator task.
    pub requests: mpsc::Sender<EvalRequest>,
    /// The audit trail.
    pub audit: Arc<Audit>,
    /// Accounts, tokens, sessions.
    pub users: Arc<crate::users::Users>,
    /// The legacy shared `http.token`, accepted as an audited admin identity.
    pub legacy_token: Option<String>,
    /// Whether reads need no login (`http.anonymous_reads`).
    pub anonymous_reads: bool,
    /// Served over TLS (session cookies get `Secure`).
    pub tls: bool,
}

/// A JSON error body: `{"error": "..."}` with a 4xx/5xx status.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl<E: std::fmt::Display> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

/// Whether a dashboard page request may carry data. A browser's first GET
/// of a page without a session (when reads need a login) gets the page as a
/// shell that sends the person to `/login`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageAccess(pub bool);

/// JSON body extractor whose rejection is a JSON error saying what was wrong.
pub(crate) struct JsonBody<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request<Body>, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(e) => Err(ApiError(e.status(), e.body_text())),
        }
    }
}
