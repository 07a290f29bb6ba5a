//! The HTTP API (axum). Read-only endpoints for now: health, ingest counters,
//! devices and their stored readings.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use coldchain_proto::{DeviceId, FrameRef};
use serde::{Deserialize, Serialize};

use crate::ingest::Stats;
use crate::registry::Registry;
use crate::store::{ReadingRow, SledStore, Store};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Arc<SledStore>,
    /// Ingest counters.
    pub stats: Arc<Stats>,
    /// Registered devices.
    pub registry: Registry,
}

/// A JSON error body: `{"error": "..."}` with a 4xx/5xx status.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

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

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/devices/{id}/readings", get(readings))
        .route("/api/v1/devices/{id}/gaps", get(gaps))
        .with_state(state)
}

async fn stats(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let st = &s.stats;
    let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let store = s.store.clone();
    let size = tokio::task::spawn_blocking(move || store.size_on_disk()).await??;
    Ok(Json(serde_json::json!({
        "frames_stored": l(&st.frames_stored),
        "readings_stored": l(&st.readings_stored),
        "duplicates": l(&st.duplicates),
        "gaps_detected": l(&st.gaps_detected),
        "clock_jumps": l(&st.clock_jumps),
        "rejected": {
            "malformed": l(&st.rejected_malformed),
            "unknown_device": l(&st.rejected_unknown_device),
            "bad_tag": l(&st.rejected_bad_tag),
            "device_mismatch": l(&st.rejected_device_mismatch),
            "unsigned": l(&st.rejected_unsigned),
        },
        "commits": l(&st.commits),
        "acked": l(&st.acked),
        "serial": {
            "opens": l(&st.serial_opens),
            "damaged_frames": l(&st.serial_damaged),
        },
        "store_bytes": size,
    })))
}

#[derive(Serialize)]
struct DeviceInfo {
    id: String,
    registered: bool,
    readings: u64,
    boot: Option<u32>,
    max_seq: Option<u32>,
    last_seen_ms: Option<i64>,
}

async fn devices(State(s): State<AppState>) -> Result<Json<Vec<DeviceInfo>>, ApiError> {
    let out = tokio::task::spawn_blocking(move || -> Result<Vec<DeviceInfo>, ApiError> {
        let mut ids: Vec<String> = s.registry.ids().iter().map(|d| d.to_string()).collect();
        for d in s.store.known_devices()? {
            if !ids.contains(&d) {
                ids.push(d);
            }
        }
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            let Ok(d) = DeviceId::new(&id) else { continue };
            let st = s.store.device_state(&d)?;
            out.push(DeviceInfo {
                registered: s.registry.get(&d).is_some(),
                readings: s.store.reading_count(&d)?,
                boot: st.as_ref().map(|s| s.boot),
                max_seq: st.as_ref().and_then(|s| s.max_seq),
                last_seen_ms: st.as_ref().map(|s| s.last_seen_ms),
                id,
            });
        }
        Ok(out)
    })
    .await??;
    Ok(Json(out))
}

#[derive(Deserialize)]
struct Page {
    /// Cursor `boot.seq.idx` from a previous page's `next`.
    after: Option<String>,
    /// Page size, 1..=10000 (default 1000).
    limit: Option<usize>,
}

#[derive(Serialize)]
struct ReadingsPage {
    readings: Vec<ReadingRow>,
    next: Option<String>,
}

fn parse_device(id: &str) -> Result<DeviceId, ApiError> {
    DeviceId::new(id).map_err(|e| bad_request(format!("device id {id:?}: {e}")))
}

fn parse_cursor(c: &str) -> Result<(FrameRef, u16), ApiError> {
    let err = || {
        bad_request(format!(
            "after={c:?}: expected boot.seq.idx as returned in `next`"
        ))
    };
    let mut it = c.split('.');
    let boot = it.next().and_then(|x| x.parse().ok()).ok_or_else(err)?;
    let seq = it.next().and_then(|x| x.parse().ok()).ok_or_else(err)?;
    let idx = it.next().and_then(|x| x.parse().ok()).ok_or_else(err)?;
    if it.next().is_some() {
        return Err(err());
    }
    Ok((FrameRef { boot, seq }, idx))
}

async fn readings(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Page>,
) -> Result<Json<ReadingsPage>, ApiError> {
    let d = parse_device(&id)?;
    let after = q.after.as_deref().map(parse_cursor).transpose()?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(bad_request(format!("limit={limit}: expected 1 to 10000")));
    }
    let rows = tokio::task::spawn_blocking(move || s.store.readings(&d, after, limit)).await??;
    let next = (rows.len() == limit)
        .then(|| {
            rows.last()
                .map(|r| format!("{}.{}.{}", r.boot, r.seq, r.idx))
        })
        .flatten();
    Ok(Json(ReadingsPage {
        readings: rows,
        next,
    }))
}

async fn gaps(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let d = parse_device(&id)?;
    let g = tokio::task::spawn_blocking(move || s.store.gaps(&d)).await??;
    Ok(Json(serde_json::json!(
        g.iter()
            .map(|(boot, first, last)| serde_json::json!({"boot": boot, "first": first, "last": last}))
            .collect::<Vec<_>>()
    )))
}
