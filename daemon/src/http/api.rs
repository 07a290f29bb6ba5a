//! The HTTP API (axum). Read-only endpoints for now: health, ingest counters,
//! devices and their stored readings.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use tokio::sync::{mpsc, oneshot};

use crate::alert::Alert;
use crate::audit::Audit;
use crate::evaluate::{Command, Evaluator, Refusal, Request as EvalRequest, status_json};
use crate::shipment::{Decision, NewShipment};
use coldchain_proto::{DeviceId, FrameRef};
use serde::{Deserialize, Serialize};

use crate::ingest::Stats;
use crate::registry::Registry;
use crate::store::{ReadingRow, SledStore, Store};
use crate::users::Actor;

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
        .route("/api/v1/devices/{id}/reenroll", post(reenroll))
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
        .route("/api/v1/alerts/{id}/assess", post(assess))
        .route("/api/v1/devices/{id}/warming", get(warming))
        .merge(super::report::router())
        .merge(super::dashboard::router())
        .merge(super::auth::router())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            super::auth::middleware,
        ))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

/// Whether a dashboard page request may carry data. A browser's first GET
/// of a page without a session (when reads need a login) gets the page as a
/// shell that sends the person to `/login`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageAccess(pub bool);

async fn send(
    s: &AppState,
    shipment: String,
    actor: Actor,
    command: Command,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (reply, rx) = oneshot::channel();
    s.requests
        .send(EvalRequest {
            shipment,
            actor,
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
        Ok(Err(r)) => Err(refusal(r)),
        Err(_) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "daemon is shutting down".into(),
        )),
    }
}

/// The status a refusal maps to, with its reason.
fn refusal(r: Refusal) -> ApiError {
    match r {
        Refusal::Bad(m) => bad_request(m),
        Refusal::NotFound(m) => ApiError(StatusCode::NOT_FOUND, m),
        Refusal::Conflict(m) => ApiError(StatusCode::CONFLICT, m),
        Refusal::Internal(m) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

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

async fn create_shipment(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    JsonBody(b): JsonBody<serde_json::Value>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    // Two steps so unknown fields in the shipment are reported by name. A
    // typed `by` (from before accounts) is accepted and ignored: the record
    // names the authenticated person.
    let mut rest = b.clone();
    if let Some(o) = rest.as_object_mut() {
        o.remove("by");
    }
    let new: NewShipment =
        serde_json::from_value(rest).map_err(|e| bad_request(format!("shipment: {e}")))?;
    let v = send(&s, new.id.clone(), actor, Command::Create(new)).await?;
    Ok((StatusCode::CREATED, v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ByAt {
    /// Accepted and ignored (the record names the authenticated person).
    #[serde(default)]
    #[allow(dead_code, reason = "accepted for compatibility, never recorded")]
    by: Option<String>,
    #[serde(default)]
    at_ms: Option<i64>,
}

async fn depart(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ByAt>,
) -> Result<Json<serde_json::Value>, ApiError> {
    send(&s, id, actor, Command::Depart { at_ms: b.at_ms }).await
}

async fn arrive(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ByAt>,
) -> Result<Json<serde_json::Value>, ApiError> {
    send(&s, id, actor, Command::Arrive { at_ms: b.at_ms }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EtaBody {
    /// Accepted and ignored (the record names the authenticated person).
    #[serde(default)]
    #[allow(dead_code, reason = "accepted for compatibility, never recorded")]
    by: Option<String>,
    eta_ms: i64,
}

async fn eta(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<EtaBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    send(&s, id, actor, Command::Eta { eta_ms: b.eta_ms }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HandoffBody {
    /// Accepted and ignored (the record names the authenticated person).
    #[serde(default)]
    #[allow(dead_code, reason = "accepted for compatibility, never recorded")]
    by: Option<String>,
    to: String,
    location: String,
    #[serde(default)]
    at_ms: Option<i64>,
}

async fn handoff(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<HandoffBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    send(
        &s,
        id,
        actor,
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
    /// Accepted and ignored (the record names the authenticated person).
    #[serde(default)]
    #[allow(dead_code, reason = "accepted for compatibility, never recorded")]
    by: Option<String>,
    decision: Decision,
    comment: String,
    /// The signer's password, asked again for this signature.
    #[serde(default)]
    password: Option<String>,
    /// The SHA-256 of the report the signer reviewed (the `content_sha256`
    /// of `GET .../report?format=json`): refused if the report changed since.
    #[serde(default)]
    report_sha256: Option<String>,
}

/// Closing is an electronic signature: the signer's password again, every
/// alert assessed by QA before a release, and the signature covers the
/// arrival report's content hash.
async fn close(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<CloseBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if actor.via == crate::users::Via::LegacyToken {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "the legacy shared token cannot sign: closing is an electronic signature by a QA person (their session or personal token, and their password)".into(),
        ));
    }
    let Some(password) = b.password.as_deref().filter(|p| !p.is_empty()) else {
        return Err(bad_request(
            "field password: signing asks for your password again (21 CFR 11.200)",
        ));
    };
    if b.comment.trim().is_empty() {
        return Err(bad_request("field comment: say why (must not be empty)"));
    }
    let u = super::auth::check_password(&s, &actor.user, password, "signature").await?;
    let s2 = s.clone();
    let id2 = id.clone();
    let decision = b.decision;
    let content = tokio::task::spawn_blocking(move || -> Result<String, ApiError> {
        let sh = s2
            .reader
            .shipments
            .get(&id2)?
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no shipment {id2:?}")))?;
        if sh.state != crate::shipment::State::Arrived {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!("shipment {id2} is {:?}: only an arrived shipment can be closed", sh.state),
            ));
        }
        let d = crate::report::for_shipment(&s2.reader, &s2.store, &id2, crate::ingest::now_ms())?
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no shipment {id2:?}")))?;
        if decision == Decision::Accepted {
            let missing: Vec<String> = d
                .alerts
                .iter()
                .filter(|a| a.withdrawn.is_none() && a.assessment.is_none())
                .map(|a| format!("alert {} ({})", a.id, a.message))
                .collect();
            if !missing.is_empty() {
                return Err(ApiError(
                    StatusCode::CONFLICT,
                    format!(
                        "cannot sign a release: each excursion needs a QA assessment first (POST /api/v1/alerts/ID/assess); not assessed: {}",
                        missing.join("; ")
                    ),
                ));
            }
        }
        Ok(crate::report::content_sha256(&d))
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    if let Some(seen) = &b.report_sha256
        && *seen != content
    {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "the report changed since you reviewed it (you saw {seen}, it is now {content}): review it again before signing"
            ),
        ));
    }
    let signature = crate::shipment::Signature {
        user: u.name.clone(),
        full_name: u.full_name.clone(),
        signed_ms: crate::ingest::now_ms(),
        meaning: decision.meaning().into(),
        report_sha256: content,
        authentication: "password re-entered".into(),
    };
    send(
        &s,
        id,
        actor,
        Command::Close {
            decision,
            comment: b.comment,
            signature: Some(signature),
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssessBody {
    comment: String,
}

/// QA's assessment of an alert (its impact on the product), needed for each
/// alert before a release can be signed. Never replaced once written.
async fn assess(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<u64>,
    JsonBody(b): JsonBody<AssessBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    if b.comment.trim().is_empty() {
        return Err(bad_request(
            "field comment: the assessment of this excursion's impact on the product (must not be empty)",
        ));
    }
    let v = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, ApiError> {
        let a = s
            .reader
            .alerts
            .get(id)?
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no alert {id}")))?;
        crate::evaluate::refuse_if_closed(&s.reader.shipments, &a.shipment, id, "assessed")
            .map_err(refusal)?;
        let now = crate::ingest::now_ms();
        let x = crate::assess::Assessment {
            alert: id,
            shipment: a.shipment.clone(),
            user: actor.user.clone(),
            full_name: actor.full_name.clone(),
            comment: b.comment.trim().to_string(),
            at_ms: now,
        };
        let store = crate::assess::Assessments::open(s.store.db())?;
        if !store.insert_new(&x)? {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!("alert {id} is already assessed (an assessment is never replaced)"),
            ));
        }
        s.audit.append_by(
            now,
            &actor,
            "alert.assess",
            &a.shipment,
            serde_json::json!({ "alert": id, "comment": x.comment }),
        )?;
        s.store.sync()?;
        Ok(serde_json::to_value(&x)?)
    })
    .await??;
    Ok((StatusCode::CREATED, Json(v)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    /// Accepted and ignored (the record names the authenticated person).
    #[serde(default)]
    #[allow(dead_code, reason = "accepted for compatibility, never recorded")]
    by: Option<String>,
    comment: String,
}

async fn ack(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<u64>,
    JsonBody(b): JsonBody<AckBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    send(
        &s,
        String::new(),
        actor,
        Command::Ack {
            alert: id,
            comment: b.comment,
        },
    )
    .await
}

async fn list_shipments(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let v = tokio::task::spawn_blocking(move || -> anyhow::Result<serde_json::Value> {
        let mut out = Vec::new();
        // From the summaries every evaluation keeps, not a re-evaluation.
        for x in s.reader.summary_rows(crate::ingest::now_ms())? {
            let mut st = x.status;
            if let Some(o) = st.as_object_mut() {
                o.insert("shipment".into(), serde_json::to_value(&x.shipment)?);
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
        let audit: Vec<serde_json::Value> = s
            .audit
            .for_subject(&sh.id)?
            .iter()
            .map(|e| e.to_json())
            .collect();
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
            .filter(|a| !q.open.unwrap_or(false) || a.is_open())
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
    Ok(Json(serde_json::Value::Array(
        v.iter().map(|e| e.to_json()).collect(),
    )))
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
        "implausible_readings": l(&st.implausible_readings),
        "rejected": st
            .rejected()
            .into_iter()
            .map(|(reason, n)| (reason.to_string(), serde_json::Value::from(n)))
            .collect::<serde_json::Map<_, _>>(),
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
    /// The device's own boot counter (stored boot minus its enrollment's offset).
    boot: Option<u32>,
    /// Re-enrollments so far (0: never re-enrolled).
    enrollment: u32,
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
            let offset = s.registry.boot_offsets(&d).last().copied().unwrap_or(0);
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
                boot: st.as_ref().and_then(|st| st.boot.checked_sub(offset)),
                enrollment: s.registry.enrollments(&d).len() as u32,
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
    /// Accepted and ignored (the record names the authenticated person).
    #[serde(default)]
    #[allow(dead_code, reason = "accepted for compatibility, never recorded")]
    by: Option<String>,
    id: String,
    /// 64 hex digits; minted by the daemon when absent (and returned once).
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    allow_unsigned_json: bool,
}

async fn add_device(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    JsonBody(b): JsonBody<AddDevice>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let id = parse_device(&b.id)?;
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
            .add(id.clone(), key.clone(), b.allow_unsigned_json, &actor.user, now)
            .map_err(|e| match e {
                crate::registry::RegistryError::InConfig(_) => ApiError(StatusCode::CONFLICT, e.to_string()),
                e => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            })?;
        s.audit.append_by(
            now,
            &actor,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reenroll {
    /// Accepted and ignored (the record names the authenticated person).
    #[serde(default)]
    #[allow(dead_code, reason = "accepted for compatibility, never recorded")]
    by: Option<String>,
    reason: String,
    /// 64 hex digits: the device's new key.
    #[serde(default)]
    key: Option<String>,
    /// Mint a new key (returned once).
    #[serde(default)]
    new_key: bool,
}

/// Re-enrolls a device whose flash was wiped or that was replaced under the
/// same id: its boots from now on are stored after everything stored before
/// (daemon/DESIGN.md, "Re-enrollment"). Optionally with a new key.
async fn reenroll(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<Reenroll>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_device(&id)?;
    if b.reason.trim().is_empty() {
        return Err(bad_request(
            "field reason: why is this device re-enrolled? (must not be empty)",
        ));
    }
    let Some(dev) = s.registry.get(&id) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("device {id} is not registered (add it with `coldchain device add`)"),
        ));
    };
    let new_key = match (&b.key, b.new_key) {
        (Some(_), true) => return Err(bad_request("give either key or new_key, not both")),
        (Some(k), false) => Some((
            coldchain_proto::DeviceKey::from_hex(k)
                .map_err(|e| bad_request(format!("field key: {e}")))?,
            false,
        )),
        (None, true) => {
            let mut bytes = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
            Some((coldchain_proto::DeviceKey::from_bytes(bytes), true))
        }
        (None, false) => None,
    };
    if new_key.is_some() && s.registry.in_config(&id) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "device {id} is defined in the config file: change its key there (then re-enroll without a key)"
            ),
        ));
    }
    let v = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, ApiError> {
        let now = crate::ingest::now_ms();
        if let Some((key, _)) = &new_key {
            s.registry
                .add(
                    id.clone(),
                    key.clone(),
                    dev.allow_unsigned_json,
                    &actor.user,
                    now,
                )
                .map_err(|e| ApiError(StatusCode::CONFLICT, e.to_string()))?;
        }
        let highest = s.store.highest_boot(&id)?;
        let offset = highest.map_or(0, |h| h.saturating_add(1));
        let e = s
            .registry
            .reenroll(&id, offset, &actor.user, &b.reason, now)
            .map_err(|e| ApiError(StatusCode::NOT_FOUND, e.to_string()))?;
        s.audit.append_by(
            now,
            &actor,
            "device.reenroll",
            id.as_str(),
            serde_json::json!({
                "reason": b.reason,
                "enrollment": e.number,
                "boot_offset": e.boot_offset,
                "highest_boot_before": highest,
                "key_fingerprint": e.key_fingerprint,
                "key_changed": new_key.is_some(),
            }),
        )?;
        s.store.sync()?;
        let mut out = serde_json::to_value(&e)?;
        out["id"] = serde_json::json!(id.as_str());
        if let Some((key, true)) = &new_key {
            out["key"] = serde_json::Value::String(hex::encode(key.as_bytes()));
        }
        Ok(out)
    })
    .await??;
    Ok(Json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    /// Readings only, as readable JSON lines, instead of the backup.
    #[serde(default)]
    readings: bool,
}

/// Streams an export (see [`crate::export`]): by default every tree of the
/// database as JSON lines `{"tree": name, "key": hex, "value": hex}`, a
/// consistent-enough backup of a running daemon that `coldchain import`
/// restores; with `readings=true` every stored reading, one JSON object a line.
async fn export(
    State(s): State<AppState>,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        if q.readings {
            crate::export::readings(&s.store, &s.registry, tx);
        } else {
            crate::export::backup(&s.store, tx);
        }
    });
    let body = Body::from_stream(crate::export::ChunkStream(rx));
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
        let mut snap = crate::metrics::Snapshot::from_stats(&s.stats);
        snap.counters.extend(super::auth::counters(&s));
        snap.gauges.push((
            "coldchain_store_bytes",
            "Database size on disk",
            s.store.size_on_disk()? as i64,
        ));
        snap.gauges.push((
            "coldchain_outbox_depth",
            "Notifications waiting for delivery",
            s.reader.outbox.depth() as i64,
        ));
        let alerts = s.reader.alerts.all()?;
        for sev in [
            crate::profile::Severity::Info,
            crate::profile::Severity::Warning,
            crate::profile::Severity::Critical,
        ] {
            let n = alerts
                .iter()
                .filter(|a| a.is_open() && a.severity == sev)
                .count();
            let name = serde_json::to_value(sev)?
                .as_str()
                .unwrap_or("")
                .to_string();
            snap.open_alerts.push((name, n as i64));
        }
        for d in s.store.known_devices()? {
            let Ok(id) = DeviceId::new(&d) else { continue };
            if let Some(st) = s.store.device_state(&id)? {
                snap.last_seen.push((d, st.last_seen_ms / 1000));
            }
        }
        Ok(crate::metrics::render(snap)?)
    })
    .await??;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn openapi() -> Json<serde_json::Value> {
    Json(super::openapi::document())
}

/// `GET /api/v1/devices/{id}/warming`: the warming rate of every cryogenic
/// shipment the device watched, in time order, flagged when faster than
/// `alerts.shipper_rate_factor` times its first shipments' mean.
async fn warming(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let r =
        tokio::task::spawn_blocking(move || crate::holdtime::history_json(&s.reader, &id)).await;
    match r {
        Ok(Ok(v)) => axum::Json(v).into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({ "error": format!("{e:#}") })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}
