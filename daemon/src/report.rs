//! The arrival report (being written).

use axum::Router;

use crate::api::AppState;

/// Routes of the report, merged into the API router.
pub fn router() -> Router<AppState> {
    Router::new()
}
