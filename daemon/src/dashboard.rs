//! The live dashboard (being written).

use axum::Router;

use crate::api::AppState;

/// Routes of the dashboard, merged into the API router.
pub fn router() -> Router<AppState> {
    Router::new()
}
