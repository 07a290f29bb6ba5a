//! The HTTP API (axum). Read-only endpoints for now: health, ingest counters,
//! devices and their stored readings.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::{mpsc, oneshot};

use crate::alert::{Alert, AlertState};
use crate::audit::Audit;
use crate::evaluate::{Command, Evaluator, Refusal, Request as EvalRequest, status_json};
use crate::shipment::{Decision, NewShipment};
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
    /// Read-only evaluation of shipments (the evaluator task owns changes).
    pub reader: Arc<Evaluator>,
    /// Changes go to the evaluator task.
    pub requests: mpsc::Sender<EvalRequest>,
    /// The audit trail.
    pub audit: Arc<Audit>,
    /// Bearer token for changes (and reads off loopback).
    pub token: Option<String>,
    /// Whether reads need the token too.
    pub reads_need_token: bool,
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
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/devices", get(devices).post(add_device))
        .route("/api/v1/export", get(export))
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/devices/{id}/readings", get(readings))
        .route("/api/v1/devices/{id}/gaps", get(gaps))
        .route(
            "/api/v1/shipments",
            get(list_shipments).post(create_shipment),
        )
        .route("/api/v1/shipments/{id}", get(show_shipment))
        .route("/api/v1/shipments/{id}/depart", post(depart))
        .route("/api/v1/shipments/{id}/eta", post(eta))
        .route("/api/v1/shipments/{id}/handoff", post(handoff))
        .route("/api/v1/shipments/{id}/arrive", post(arrive))
        .route("/api/v1/shipments/{id}/close", post(close))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/{id}/ack", post(ack))
        .route("/api/v1/audit", get(audit_list))
        .route("/api/v1/audit/verify", get(audit_verify))
        .merge(crate::report::router())
        .merge(crate::dashboard::router())
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

/// Bearer-token check: every change needs the token; reads need it when the
/// API is bound to anything but loopback. Without a configured token the API
/// is read-only.
/// Whether a dashboard page request carried what reads need. Off loopback a
/// browser's first GET of a page has no token: the page then comes as a shell
/// without data that asks for the token (kept in the browser) and loads its
/// content through the token-protected fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageAccess(pub bool);

fn is_dashboard_page(path: &str) -> bool {
    path == "/" || path.starts_with("/shipments/") || path.starts_with("/assets/")
}

async fn auth(State(s): State<AppState>, mut req: Request<Body>, next: Next) -> Response {
    let change = req.method() != Method::GET && req.method() != Method::HEAD;
    if !change && !s.reads_need_token {
        req.extensions_mut().insert(PageAccess(true));
        return next.run(req).await;
    }
    let Some(token) = &s.token else {
        return ApiError(
            StatusCode::FORBIDDEN,
            "this API is read-only: set http.token in the daemon's config to allow changes".into(),
        )
        .into_response();
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = given.is_some_and(|g| {
        // Constant-time comparison.
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if !change && is_dashboard_page(req.uri().path()) {
        // Pages and assets carry no data without the token (see PageAccess).
        req.extensions_mut().insert(PageAccess(ok));
        return next.run(req).await;
    }
    if !ok {
        let why = if given.is_none() {
            "missing bearer token: send Authorization: Bearer <http.token>"
        } else {
            "wrong bearer token"
        };
        return ApiError(StatusCode::UNAUTHORIZED, why.into()).into_response();
    }
    req.extensions_mut().insert(PageAccess(true));
    next.run(req).await
}

async fn send(
    s: &AppState,
    shipment: String,
    by: String,
    command: Command,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (reply, rx) = oneshot::channel();
    s.requests
        .send(EvalRequest {
            shipment,
            by,
            command,
            reply,
        })
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "daemon is shutting down".into(),
            )
        })?;
    match rx.await {
        Ok(Ok(v)) => Ok(Json(v)),
        Ok(Err(Refusal::Bad(m))) => Err(bad_request(m)),
        Ok(Err(Refusal::NotFound(m))) => Err(ApiError(StatusCode::NOT_FOUND, m)),
        Ok(Err(Refusal::Conflict(m))) => Err(ApiError(StatusCode::CONFLICT, m)),
        Ok(Err(Refusal::Internal(m))) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, m)),
        Err(_) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "daemon is shutting down".into(),
        )),
    }
}

/// JSON body extractor whose rejection is a JSON error saying what was wrong.
struct JsonBody<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request<Body>, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(e) => Err(ApiError(e.status(), e.body_text())),
        }
    }
}

async fn create_shipment(
    State(s): State<AppState>,
    JsonBody(b): JsonBody<serde_json::Value>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    // Two steps so unknown fields in the shipment are reported by name.
    let by = b
        .get("by")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let mut rest = b.clone();
    if let Some(o) = rest.as_object_mut() {
        o.remove("by");
    }
    let new: NewShipment =
        serde_json::from_value(rest).map_err(|e| bad_request(format!("shipment: {e}")))?;
    let v = send(&s, new.id.clone(), by, Command::Create(new)).await?;
    Ok((StatusCode::CREATED, v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ByAt {
    by: String,
    #[serde(default)]
    at_ms: Option<i64>,
}

async fn depart(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ByAt>,
) -> Result<Json<serde_json::Value>, ApiError> {
    send(&s, id, b.by, Command::Depart { at_ms: b.at_ms }).await
}

async fn arrive(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ByAt>,
) -> Result<Json<serde_json::Value>, ApiError> {
    send(&s, id, b.by, Command::Arrive { at_ms: b.at_ms }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EtaBody {
    by: String,
    eta_ms: i64,
}

async fn eta(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<EtaBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    send(&s, id, b.by, Command::Eta { eta_ms: b.eta_ms }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HandoffBody {
    by: String,
    to: String,
    location: String,
    #[serde(default)]
    at_ms: Option<i64>,
}

async fn handoff(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<HandoffBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    send(
        &s,
        id,
        b.by,
        Command::Handoff {
            to: b.to,
            location: b.location,
            at_ms: b.at_ms,
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    by: String,
    decision: Decision,
    comment: String,
}

async fn close(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<CloseBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    send(
        &s,
        id,
        b.by,
        Command::Close {
            decision: b.decision,
            comment: b.comment,
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    by: String,
    comment: String,
}

async fn ack(
    State(s): State<AppState>,
    Path(id): Path<u64>,
    JsonBody(b): JsonBody<AckBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    send(
        &s,
        String::new(),
        b.by,
        Command::Ack {
            alert: id,
            comment: b.comment,
        },
    )
    .await
}

async fn list_shipments(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let v = tokio::task::spawn_blocking(move || -> anyhow::Result<serde_json::Value> {
        let now = crate::ingest::now_ms();
        let mut out = Vec::new();
        for sh in s.reader.shipments.all()? {
            let ev = s.reader.evaluate(&sh, now)?;
            let alerts = s.reader.alerts.of_shipment(&sh.id)?;
            let mut st = status_json(&ev, &alerts);
            if let Some(o) = st.as_object_mut() {
                o.insert("shipment".into(), serde_json::to_value(&sh)?);
            }
            out.push(st);
        }
        Ok(serde_json::Value::Array(out))
    })
    .await??;
    Ok(Json(v))
}

async fn show_shipment(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let v = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, ApiError> {
        let sh = s
            .reader
            .shipments
            .get(&id)?
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no shipment {id:?}")))?;
        let ev = s.reader.evaluate(&sh, crate::ingest::now_ms())?;
        let alerts = s.reader.alerts.of_shipment(&sh.id)?;
        let audit = s.audit.for_subject(&sh.id)?;
        Ok(serde_json::json!({
            "status": status_json(&ev, &alerts),
            "evaluation": ev,
            "alerts": alerts,
            "audit": audit,
        }))
    })
    .await??;
    Ok(Json(v))
}

#[derive(Deserialize)]
struct AlertQuery {
    open: Option<bool>,
    shipment: Option<String>,
}

async fn list_alerts(
    State(s): State<AppState>,
    Query(q): Query<AlertQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let v = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Alert>> {
        Ok(s.reader
            .alerts
            .all()?
            .into_iter()
            .filter(|a| q.shipment.as_ref().is_none_or(|sh| &a.shipment == sh))
            .filter(|a| !q.open.unwrap_or(false) || a.state != AlertState::Resolved)
            .collect())
    })
    .await??;
    Ok(Json(serde_json::to_value(v)?))
}

#[derive(Deserialize)]
struct AuditQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn audit_list(
    State(s): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let v = tokio::task::spawn_blocking(move || {
        s.audit
            .list(q.after.unwrap_or(0), q.limit.unwrap_or(1000).min(10_000))
    })
    .await??;
    Ok(Json(serde_json::to_value(v)?))
}

async fn audit_verify(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let v = tokio::task::spawn_blocking(move || s.audit.verify()).await??;
    Ok(Json(serde_json::to_value(v)?))
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
            "too_large": l(&st.rejected_too_large),
            "malformed": l(&st.rejected_malformed),
            "unknown_device": l(&st.rejected_unknown_device),
            "bad_tag": l(&st.rejected_bad_tag),
            "device_mismatch": l(&st.rejected_device_mismatch),
            "unsigned": l(&st.rejected_unsigned),
            "sequence_reuse": l(&st.rejected_sequence_reuse),
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
    /// Connected to the broker, from its retained online topic (`None`:
    /// never said).
    online: Option<bool>,
    /// When the daemon learned `online`.
    online_since_ms: Option<i64>,
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
            let pr = s
                .stats
                .presence
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&id)
                .copied();
            out.push(DeviceInfo {
                online: pr.map(|p| p.online),
                online_since_ms: pr.map(|p| p.since_ms),
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddDevice {
    by: String,
    id: String,
    /// 64 hex digits; minted by the daemon when absent (and returned once).
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    allow_unsigned_json: bool,
}

async fn add_device(
    State(s): State<AppState>,
    JsonBody(b): JsonBody<AddDevice>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let id = parse_device(&b.id)?;
    if b.by.trim().is_empty() {
        return Err(bad_request(
            "field by: who is adding this device? (must not be empty)",
        ));
    }
    let (key, minted) = match &b.key {
        Some(k) => (
            coldchain_proto::DeviceKey::from_hex(k)
                .map_err(|e| bad_request(format!("field key: {e}")))?,
            false,
        ),
        None => {
            let mut bytes = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
            (coldchain_proto::DeviceKey::from_bytes(bytes), true)
        }
    };
    let fp = crate::registry::fingerprint(&key);
    let v = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, ApiError> {
        let now = crate::ingest::now_ms();
        let replaced = s
            .registry
            .add(id.clone(), key.clone(), b.allow_unsigned_json, &b.by, now)
            .map_err(|e| match e {
                crate::registry::RegistryError::InConfig(_) => ApiError(StatusCode::CONFLICT, e.to_string()),
                e => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            })?;
        s.audit.append(
            now,
            &b.by,
            if replaced { "device.rekey" } else { "device.add" },
            id.as_str(),
            serde_json::json!({ "key_fingerprint": fp, "allow_unsigned_json": b.allow_unsigned_json }),
        )?;
        s.store.sync()?;
        let mut out = serde_json::json!({ "id": id.as_str(), "key_fingerprint": fp, "replaced": replaced });
        if minted {
            out["key"] = serde_json::Value::String(hex::encode(key.as_bytes()));
        }
        Ok(out)
    })
    .await??;
    Ok((StatusCode::CREATED, Json(v)))
}

/// Every tree of the database as JSON lines: `{"tree": name, "key": hex, "value": hex}`.
/// A consistent-enough backup of a running daemon; `coldchain import` restores it.
async fn export(State(s): State<AppState>) -> Result<Response, ApiError> {
    let body = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let mut out = String::new();
        for (_kind, name, items) in s.store.db().export() {
            let name = String::from_utf8_lossy(&name).into_owned();
            for mut kv in items {
                let v = kv.pop().unwrap_or_default();
                let k = kv.pop().unwrap_or_default();
                out.push_str(&serde_json::json!({ "tree": name, "key": hex::encode(k), "value": hex::encode(v) }).to_string());
                out.push('\n');
            }
        }
        Ok(out)
    })
    .await??;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// 200 `ready`, or 503 with one line per reason: the store does not answer,
/// storage full, not connected to the broker or in a reconnect loop.
async fn readyz(State(s): State<AppState>) -> Response {
    let store = s.store.clone();
    match tokio::task::spawn_blocking(move || store.size_on_disk()).await {
        Ok(Ok(_)) => {
            let mut why = Vec::new();
            if s.stats.storage_full.load(Ordering::Relaxed) == 1 {
                why.push(
                    "storage full: the database is over store.max_disk_mb; intake paused"
                        .to_string(),
                );
            }
            why.extend(s.stats.mqtt_not_ready());
            if why.is_empty() {
                (StatusCode::OK, "ready\n").into_response()
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, why.join("\n") + "\n").into_response()
            }
        }
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// Prometheus text exposition format.
async fn metrics(State(s): State<AppState>) -> Result<Response, ApiError> {
    let text = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        use std::fmt::Write;
        let st = &s.stats;
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let mut o = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter("coldchain_frames_stored_total", "Frames stored since start.", l(&st.frames_stored));
        counter("coldchain_readings_stored_total", "Readings stored since start.", l(&st.readings_stored));
        counter("coldchain_duplicates_total", "Duplicate frames dropped since start.", l(&st.duplicates));
        counter("coldchain_gaps_detected_total", "Sequence gaps detected since start.", l(&st.gaps_detected));
        counter("coldchain_commits_total", "Group commits (flush + fsync) since start.", l(&st.commits));
        let _ = writeln!(o, "# HELP coldchain_rejected_total Messages rejected since start, by reason.\n# TYPE coldchain_rejected_total counter");
        for (reason, v) in [
            ("too_large", l(&st.rejected_too_large)),
            ("malformed", l(&st.rejected_malformed)),
            ("unknown_device", l(&st.rejected_unknown_device)),
            ("bad_tag", l(&st.rejected_bad_tag)),
            ("device_mismatch", l(&st.rejected_device_mismatch)),
            ("unsigned", l(&st.rejected_unsigned)),
            ("sequence_reuse", l(&st.rejected_sequence_reuse)),
        ] {
            let _ = writeln!(o, "coldchain_rejected_total{{reason=\"{reason}\"}} {v}");
        }
        let _ = writeln!(o, "# HELP coldchain_mqtt_connected 1 while connected to the MQTT broker.\n# TYPE coldchain_mqtt_connected gauge\ncoldchain_mqtt_connected {}", l(&st.mqtt_connected));
        let _ = writeln!(o, "# HELP coldchain_mqtt_reconnects_total Broker connections lost or attempts failed since start (each followed by a reconnect).\n# TYPE coldchain_mqtt_reconnects_total counter\ncoldchain_mqtt_reconnects_total {}", l(&st.mqtt_reconnects));
        let _ = writeln!(o, "# HELP coldchain_store_bytes Database size on disk.\n# TYPE coldchain_store_bytes gauge\ncoldchain_store_bytes {}", s.store.size_on_disk()?);
        let _ = writeln!(o, "# HELP coldchain_storage_full 1 while the database is over its disk budget and intake is paused.\n# TYPE coldchain_storage_full gauge\ncoldchain_storage_full {}", st.storage_full.load(Ordering::Relaxed));
        let _ = writeln!(o, "# HELP coldchain_retention_purged_frames_total Frames purged by retention (store.retention_days) since start.\n# TYPE coldchain_retention_purged_frames_total counter\ncoldchain_retention_purged_frames_total {}", st.retention_purged_frames.load(Ordering::Relaxed));
        let _ = writeln!(o, "# HELP coldchain_outbox_depth Notifications waiting for delivery.\n# TYPE coldchain_outbox_depth gauge\ncoldchain_outbox_depth {}", s.reader.outbox.depth());
        let alerts = s.reader.alerts.all()?;
        let _ = writeln!(o, "# HELP coldchain_open_alerts Alerts not yet resolved, by severity.\n# TYPE coldchain_open_alerts gauge");
        for sev in [crate::profile::Severity::Info, crate::profile::Severity::Warning, crate::profile::Severity::Critical] {
            let n = alerts.iter().filter(|a| a.state != AlertState::Resolved && a.severity == sev).count();
            let name = serde_json::to_value(sev)?.as_str().unwrap_or("").to_string();
            let _ = writeln!(o, "coldchain_open_alerts{{severity=\"{name}\"}} {n}");
        }
        let _ = writeln!(o, "# HELP coldchain_device_last_seen_seconds Unix time a device was last heard from.\n# TYPE coldchain_device_last_seen_seconds gauge");
        for d in s.store.known_devices()? {
            let Ok(id) = DeviceId::new(&d) else { continue };
            if let Some(st) = s.store.device_state(&id)? {
                let _ = writeln!(o, "coldchain_device_last_seen_seconds{{device=\"{d}\"}} {}", st.last_seen_ms / 1000);
            }
        }
        let _ = writeln!(o, "# HELP coldchain_device_online 1 while a device's retained online topic says online, 0 after its last will.\n# TYPE coldchain_device_online gauge");
        let presence = s.stats.presence.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (d, p) in presence {
            let _ = writeln!(o, "coldchain_device_online{{device=\"{d}\"}} {}", u8::from(p.online));
        }
        Ok(o)
    })
    .await??;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
