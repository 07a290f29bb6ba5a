//! The HTTP side of the daemon: the API, the dashboard, the report's
//! routes, authentication (sessions, cookies, CSRF, tokens, the role check
//! of every route) and the OpenAPI document.
//!
//! Nothing outside this module imports from it but the server's start-up
//! (`run.rs`): the domain (shipments, alerts, evaluation, the report's data,
//! accounts' storage, the audit trail) knows nothing of HTTP, and the
//! handlers here call into it.

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod openapi;
pub mod report;

pub use api::{AppState, router};
