//! The HTTP side of the daemon: the API, the dashboard, the report's
//! routes, authentication (sessions, cookies, CSRF, tokens, the role check
//! of every route) and the OpenAPI document.
//!
//! Nothing outside this module imports from it but the server's start-up
//! (`run.rs`): the domain (shipments, alerts, evaluation, the report's data,
//! accounts' storage, the audit trail) knows nothing of HTTP, and the
//! handlers here call into it.
//!
//! Every API route is added with `utoipa_axum::routes!` from a handler's
//! `#[utoipa::path]`, so it is documented by construction ([`openapi`]);
//! only the dashboard's pages are plain routes.

use axum::Router;
use axum::middleware;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod openapi;
pub mod report;
pub mod state;

pub use state::{ApiError, AppState};

/// The routes behind authentication (the middleware identifies the person
/// and checks their role for each).
fn authenticated() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(api::routes())
        .merge(auth::routes())
        .merge(report::routes())
}

/// Every documented route: the authenticated ones and `/healthz`.
pub fn documented() -> OpenApiRouter<AppState> {
    authenticated().merge(api::public_routes())
}

/// The server's router.
pub fn router(state: AppState) -> Router {
    let (authed, _) = authenticated().split_for_parts();
    let (public, _) = api::public_routes().split_for_parts();
    authed
        .merge(dashboard::router())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::middleware,
        ))
        .merge(public)
        .with_state(state)
}
