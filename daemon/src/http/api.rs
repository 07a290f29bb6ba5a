//! The HTTP API (axum). Read-only endpoints for now: health, ingest counters,
//! devices and their stored readings.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use tokio::sync::{mpsc, oneshot};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::state::{ApiError, AppState, JsonBody};
use crate::alert::Alert;
use crate::evaluate::{Command, Refusal, Request as EvalRequest, status_json};
use crate::shipment::{Decision, NewShipment};
use coldchain_proto::{DeviceId, FrameRef};
use serde::{Deserialize, Serialize};

use crate::store::{ReadingRow, Store};
use crate::users::Actor;

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// The API's routes (behind authentication), each documented by its
/// handler's `#[utoipa::path]`.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stats))
        .routes(routes!(devices, add_device))
        .routes(routes!(export))
        .routes(routes!(metrics))
        .routes(routes!(readyz))
        .routes(routes!(openapi))
        .routes(routes!(readings))
        .routes(routes!(gaps))
        .routes(routes!(reenroll))
        .routes(routes!(warming))
        .routes(routes!(list_shipments, create_shipment))
        .routes(routes!(show_shipment))
        .routes(routes!(depart))
        .routes(routes!(eta))
        .routes(routes!(handoff))
        .routes(routes!(arrive))
        .routes(routes!(close))
        .routes(routes!(list_alerts))
        .routes(routes!(ack))
        .routes(routes!(assess))
        .routes(routes!(audit_list))
        .routes(routes!(audit_verify))
        .routes(routes!(sites))
}

/// Routes that need no credential and bypass authentication: liveness.
pub(super) fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz))
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    summary = "Liveness: `ok`",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain"))
)]
async fn healthz() -> &'static str {
    "ok\n"
}

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

/// The body of `POST /api/v1/shipments`: [`NewShipment`] as the document
/// shows it (the engine's type carries no schema; a test keeps the two the
/// same), and the ignored `by`.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewShipment)]
pub(super) struct NewShipmentBody {
    /// Accepted and ignored (the record names the authenticated person).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    by: Option<String>,
    /// 1-64 characters without '/', '+', '#' or control characters.
    id: String,
    /// What travels.
    product: String,
    /// ISBT 128 DIN with flags and check character, e.g. `G1234 98 654321 00 H`; refused (400) when its structure, flags or ISO 7064 Mod 37-2 check character is wrong.
    #[serde(default)]
    din: Option<String>,
    /// ISBT 128 product code, e.g. `S1194` (shape checked only).
    #[serde(default)]
    product_code: Option<String>,
    /// The lane's profile name (config).
    profile: String,
    /// The watching devices' product probes.
    watch: Vec<WatchBody>,
    /// Origin.
    origin: String,
    /// Destination.
    destination: String,
    /// ETA, ms since the Unix epoch.
    #[serde(default)]
    eta_ms: Option<i64>,
    /// Collection, ms since the Unix epoch.
    #[serde(default)]
    collection_ms: Option<i64>,
    /// Viability window, hours.
    #[serde(default)]
    window_h: Option<f64>,
    /// Departure, ms since the Unix epoch: given, the shipment starts in transit.
    #[serde(default)]
    departure_ms: Option<i64>,
}

/// A watching device's product probe.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Watch)]
struct WatchBody {
    /// Device id.
    device: String,
    /// Channel number.
    channel: u8,
}

#[utoipa::path(
    post,
    path = "/api/v1/shipments",
    tag = "shipments",
    summary = "Create a shipment (in transit at once when `departure_ms` is given)",
    request_body = NewShipmentBody,
    responses((status = 201, description = "The shipment", body = coldchain_engine::shipment::Shipment))
)]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ByAt {
    /// Accepted and ignored (the record names the authenticated person).
    #[serde(default)]
    #[allow(dead_code, reason = "accepted for compatibility, never recorded")]
    by: Option<String>,
    #[serde(default)]
    at_ms: Option<i64>,
}

#[utoipa::path(
    post,
    path = "/api/v1/shipments/{id}/depart",
    tag = "shipments",
    summary = "planned -> in transit",
    params(("id" = String, Path, description = "Shipment id (URL-encoded)")),
    request_body = ByAt,
    responses((status = 200, description = "The shipment", body = coldchain_engine::shipment::Shipment))
)]
async fn depart(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ByAt>,
) -> Result<Json<serde_json::Value>, ApiError> {
    send(&s, id, actor, Command::Depart { at_ms: b.at_ms }).await
}

#[utoipa::path(
    post,
    path = "/api/v1/shipments/{id}/arrive",
    tag = "shipments",
    summary = "in transit -> arrived",
    params(("id" = String, Path, description = "Shipment id (URL-encoded)")),
    request_body = ByAt,
    responses((status = 200, description = "The shipment", body = coldchain_engine::shipment::Shipment))
)]
async fn arrive(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ByAt>,
) -> Result<Json<serde_json::Value>, ApiError> {
    send(&s, id, actor, Command::Arrive { at_ms: b.at_ms }).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct EtaBody {
    /// Accepted and ignored (the record names the authenticated person).
    #[serde(default)]
    #[allow(dead_code, reason = "accepted for compatibility, never recorded")]
    by: Option<String>,
    eta_ms: i64,
}

#[utoipa::path(
    post,
    path = "/api/v1/shipments/{id}/eta",
    tag = "shipments",
    summary = "Update the ETA",
    params(("id" = String, Path, description = "Shipment id (URL-encoded)")),
    request_body = EtaBody,
    responses((status = 200, description = "The shipment", body = coldchain_engine::shipment::Shipment))
)]
async fn eta(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<EtaBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    send(&s, id, actor, Command::Eta { eta_ms: b.eta_ms }).await
}

#[derive(Deserialize, ToSchema)]
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

#[utoipa::path(
    post,
    path = "/api/v1/shipments/{id}/handoff",
    tag = "shipments",
    summary = "Record a custody hand-off",
    params(("id" = String, Path, description = "Shipment id (URL-encoded)")),
    request_body = HandoffBody,
    responses((status = 200, description = "The shipment", body = coldchain_engine::shipment::Shipment))
)]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    /// Accepted and ignored (the record names the authenticated person).
    #[serde(default)]
    #[allow(dead_code, reason = "accepted for compatibility, never recorded")]
    by: Option<String>,
    #[schema(value_type = DecisionName)]
    decision: Decision,
    comment: String,
    /// The signer's password, asked again for this signature (400 without).
    #[serde(default)]
    #[schema(required = true, value_type = String)]
    password: Option<String>,
    /// The SHA-256 of the report the signer reviewed (the `content_sha256`
    /// of `GET .../report?format=json`): refused if the report changed since.
    #[serde(default)]
    report_sha256: Option<String>,
}

/// [`Decision`] as the document shows it (the engine's type carries no schema).
#[derive(ToSchema)]
#[schema(as = Decision, rename_all = "snake_case")]
#[allow(dead_code, reason = "only the schema of Decision")]
enum DecisionName {
    /// Released for use.
    Accepted,
    /// Held pending investigation.
    Quarantined,
    /// Not to be used.
    Rejected,
}

/// Closing is an electronic signature: the signer's password again, every
/// alert assessed by QA before a release, and the signature covers the
/// arrival report's content hash.
#[utoipa::path(
    post,
    path = "/api/v1/shipments/{id}/close",
    tag = "shipments",
    summary = "arrived -> closed: the disposition as an electronic signature by a QA person (their password again; meaning `released for use`, `quarantined` or `rejected`; covers the report's content SHA-256). A release is refused (409) until each alert not withdrawn has a QA assessment",
    params(("id" = String, Path, description = "Shipment id (URL-encoded)")),
    request_body = CloseBody,
    responses((status = 200, description = "The closed shipment with its signed disposition", body = coldchain_engine::shipment::Shipment))
)]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AssessBody {
    comment: String,
}

/// QA's assessment of an alert (its impact on the product), needed for each
/// alert before a release can be signed. Never replaced once written.
#[utoipa::path(
    post,
    path = "/api/v1/alerts/{id}/assess",
    tag = "alerts",
    summary = "QA's assessment of an alert's impact on the product (once; needed before a release; refused (409) once its shipment is closed)",
    params(("id" = u64, Path, description = "Alert id")),
    request_body = AssessBody,
    responses((status = 201, description = "The assessment", body = crate::assess::Assessment))
)]
async fn assess(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<u64>,
    JsonBody(b): JsonBody<AssessBody>,
) -> Result<(StatusCode, Json<crate::assess::Assessment>), ApiError> {
    if b.comment.trim().is_empty() {
        return Err(bad_request(
            "field comment: the assessment of this excursion's impact on the product (must not be empty)",
        ));
    }
    let v = tokio::task::spawn_blocking(move || -> Result<crate::assess::Assessment, ApiError> {
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
        Ok(x)
    })
    .await??;
    Ok((StatusCode::CREATED, Json(v)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AckBody {
    /// Accepted and ignored (the record names the authenticated person).
    #[serde(default)]
    #[allow(dead_code, reason = "accepted for compatibility, never recorded")]
    by: Option<String>,
    comment: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/alerts/{id}/ack",
    tag = "alerts",
    summary = "Acknowledge an alert (logistics, qa, admin); refused (409) once its shipment is closed",
    params(("id" = u64, Path, description = "Alert id")),
    request_body = AckBody,
    responses((status = 200, description = "The alert", body = Alert))
)]
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

/// `?site=` of the shipment list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SiteQuery {
    /// Only shipments seen through this path: a gateway id, `direct` or
    /// `serial` (the `seen_through` of each row).
    site: Option<String>,
}

/// What a shipment's status document says (schema only: the document is
/// written by `evaluate::status_doc`; tests/tests/api_contract.rs checks real
/// answers against this schema). Every field is always there (`null` when
/// not known).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub(super) struct StatusFields {
    /// Lifecycle state.
    state: coldchain_engine::shipment::State,
    /// Profile name.
    profile: String,
    /// The newest reading, if any.
    #[schema(required = true)]
    last: Option<coldchain_engine::evaluation::Point>,
    /// Lowest temperature so far, m°C.
    #[schema(required = true)]
    min_milli_c: Option<i32>,
    /// Highest temperature so far, m°C.
    #[schema(required = true)]
    max_milli_c: Option<i32>,
    /// Viability window left, ms (none without a window).
    #[schema(required = true)]
    window_remaining_ms: Option<i64>,
    /// Window predicted left at the ETA, ms.
    #[schema(required = true)]
    window_predicted_at_eta_ms: Option<i64>,
    /// The hold-time prediction (dry shippers), with its sentence.
    #[schema(required = true)]
    hold_time: Option<HoldTimeDoc>,
    /// Open alerts.
    open_alerts: usize,
    /// The worst open severity.
    #[schema(required = true)]
    worst_open: Option<coldchain_engine::profile::Severity>,
    /// Open alerts nobody acknowledged.
    unacknowledged: usize,
}

/// A dry shipper's hold-time prediction as the status document carries it
/// (schema only: `coldchain_engine::holdtime::status`): the prediction and
/// its sentence.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub(super) struct HoldTimeDoc {
    #[serde(flatten)]
    prediction: coldchain_engine::holdtime::HoldPrediction,
    /// `crosses -150 °C at 14:20 ± 40 min, 3 h 10 min before ETA` (UTC).
    sentence: String,
}

/// One row of the shipment list: the status document with the shipment
/// itself in place of its id, and the paths its data came through (schema
/// only, see [`StatusFields`]).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub(super) struct ShipmentRow {
    /// The shipment.
    shipment: coldchain_engine::shipment::Shipment,
    /// Gateways (ids), `direct` or `serial` its data came through.
    seen_through: Vec<String>,
    #[serde(flatten)]
    status: StatusFields,
}

/// A shipment's status document (schema only, see [`StatusFields`]).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub(super) struct StatusDoc {
    /// The shipment's id.
    shipment: String,
    #[serde(flatten)]
    status: StatusFields,
}

/// An audit entry as the API shows it (schema only: `AuditEntry::to_json`).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub(super) struct AuditEntryDoc {
    #[serde(flatten)]
    entry: crate::audit::AuditEntry,
    /// `authenticated`, `legacy typed name` or `daemon`.
    identity: String,
}

/// A shipment with everything known about it (schema only).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub(super) struct ShipmentDetail {
    /// Its status document.
    status: StatusDoc,
    /// The full evaluation: conditions, viability, data health.
    #[schema(value_type = Object)]
    evaluation: serde_json::Value,
    /// Its alerts.
    alerts: Vec<Alert>,
    /// Its audit entries, oldest first.
    audit: Vec<AuditEntryDoc>,
}

#[utoipa::path(
    get,
    path = "/api/v1/shipments",
    tag = "shipments",
    summary = "Shipments with their status and the paths (gateways) their data came through",
    params(SiteQuery),
    responses((status = 200, description = "Status documents, each with its shipment and `seen_through`", body = Vec<ShipmentRow>))
)]
async fn list_shipments(
    State(s): State<AppState>,
    Query(q): Query<SiteQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = crate::sites::SiteFilter { site: q.site };
    let v = tokio::task::spawn_blocking(move || -> anyhow::Result<serde_json::Value> {
        let mut out = Vec::new();
        let paths = crate::sites::Paths::open(s.store.db())?;
        let now = crate::ingest::now_ms();
        // From the summaries every evaluation keeps, not a re-evaluation.
        for x in s.reader.summary_rows(now)? {
            let Some(seen) = q.select(&paths, &x.shipment, now)? else {
                continue;
            };
            let mut st = x.status;
            if let Some(o) = st.as_object_mut() {
                o.insert("shipment".into(), serde_json::to_value(&x.shipment)?);
                o.insert("seen_through".into(), seen.into());
            }
            out.push(st);
        }
        Ok(serde_json::Value::Array(out))
    })
    .await??;
    Ok(Json(v))
}

#[utoipa::path(
    get,
    path = "/api/v1/shipments/{id}",
    tag = "shipments",
    summary = "A shipment: status, full evaluation, alerts, audit entries",
    params(("id" = String, Path, description = "Shipment id (URL-encoded)")),
    responses((status = 200, description = "status, evaluation, alerts, audit", body = ShipmentDetail))
)]
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AlertQuery {
    open: Option<bool>,
    shipment: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "alerts",
    summary = "Alerts; `open=true` for unresolved ones, `shipment=` to filter",
    params(AlertQuery),
    responses((status = 200, description = "Alerts", body = Vec<Alert>))
)]
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    summary = "Audit trail entries, oldest first; `after` = seq, `limit`",
    params(AuditQuery),
    responses((status = 200, description = "Entries", body = Vec<AuditEntryDoc>))
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/audit/verify",
    tag = "audit",
    summary = "Walk the hash chain: `ok`, `entries`, `head`, `problems`",
    responses((status = 200, description = "The verification", body = crate::audit::Verification))
)]
async fn audit_verify(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let v = tokio::task::spawn_blocking(move || s.audit.verify()).await??;
    Ok(Json(serde_json::to_value(v)?))
}

#[utoipa::path(
    get,
    path = "/api/v1/stats",
    tag = "ops",
    summary = "Ingest counters as JSON",
    responses((status = 200, description = "Counters since start: frames, readings, duplicates, gaps, rejections by reason, serial, store size", body = Stats))
)]
async fn stats(State(s): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let st = &s.stats;
    let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let store = s.store.clone();
    let size = tokio::task::spawn_blocking(move || store.size_on_disk()).await??;
    Ok(Json(Stats {
        frames_stored: l(&st.frames_stored),
        readings_stored: l(&st.readings_stored),
        duplicates: l(&st.duplicates),
        gaps_detected: l(&st.gaps_detected),
        clock_jumps: l(&st.clock_jumps),
        implausible_readings: l(&st.implausible_readings),
        rejected: st
            .rejected()
            .into_iter()
            .map(|(reason, n)| (reason.to_string(), n))
            .collect(),
        commits: l(&st.commits),
        acked: l(&st.acked),
        serial: SerialStats {
            opens: l(&st.serial_opens),
            damaged_frames: l(&st.serial_damaged),
        },
        store_bytes: size,
    }))
}

/// The ingest counters since start (`GET /api/v1/stats`).
#[derive(Serialize, ToSchema)]
struct Stats {
    /// Frames stored.
    frames_stored: u64,
    /// Readings stored.
    readings_stored: u64,
    /// Frames received again and not stored twice.
    duplicates: u64,
    /// Sequence gaps detected.
    gaps_detected: u64,
    /// Device clock jumps detected.
    clock_jumps: u64,
    /// Readings outside the plausible range (stored, flagged).
    implausible_readings: u64,
    /// Frames refused, by reason (`too_large`, `malformed`, `unknown_device`,
    /// `bad_tag`, `device_mismatch`, `unsigned`, ...).
    rejected: BTreeMap<String, u64>,
    /// Group commits.
    commits: u64,
    /// Frames acknowledged to devices.
    acked: u64,
    /// The serial link.
    serial: SerialStats,
    /// Database size on disk, bytes.
    store_bytes: u64,
}

/// The serial link's counters.
#[derive(Serialize, ToSchema)]
struct SerialStats {
    /// Times the port was opened.
    opens: u64,
    /// Damaged frames on the line.
    damaged_frames: u64,
}

#[derive(Serialize, ToSchema)]
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

#[utoipa::path(
    get,
    path = "/api/v1/devices",
    tag = "devices",
    summary = "Registered and seen devices",
    responses((status = 200, description = "Devices", body = Vec<DeviceInfo>))
)]
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Page {
    /// Cursor `boot.seq.idx` from a previous page's `next`.
    after: Option<String>,
    /// Page size, 1..=10000 (default 1000).
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
struct ReadingsPage {
    /// The readings, oldest first.
    #[schema(value_type = Vec<ReadingDoc>)]
    readings: Vec<ReadingRow>,
    /// The cursor of the next page (`boot.seq.idx`), when this one was full.
    next: Option<String>,
}

/// A stored reading as the API shows it: [`ReadingRow`] as the document
/// shows it (the store's and the wire contract's types carry no schema; a
/// test keeps the two the same).
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Reading)]
pub(super) struct ReadingDoc {
    /// Device id.
    device: String,
    /// Stored boot (the device's boot counter plus its enrollment's offset).
    boot: u32,
    /// Sequence number of its frame.
    seq: u32,
    /// Index of the reading within its frame.
    idx: u16,
    /// Channel number.
    channel: u8,
    /// What the channel measures.
    kind: ChannelKindName,
    /// The value in milli-units (`{"valid": m°C or m%RH}`) or the fault
    /// (`{"fault": kind}`).
    value: MeasurementDoc,
    /// Wall time of the sample, ms since the Unix epoch (see `time_source`).
    time_ms: i64,
    /// How `time_ms` was obtained.
    time_source: crate::store::TimeSource,
}

/// `coldchain_proto::ChannelKind` as the document shows it.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ChannelKind)]
enum ChannelKindName {
    /// Platinum RTD probe, m°C.
    Rtd,
    /// Thermocouple, m°C.
    Thermocouple,
    /// Ambient air, m°C.
    Ambient,
    /// Relative humidity, m%RH.
    Humidity,
}

/// `coldchain_proto::Measurement` as the document shows it.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = Measurement)]
enum MeasurementDoc {
    /// A valid value in milli-units.
    Valid(i32),
    /// The channel is faulted.
    Fault(FaultName),
}

/// `coldchain_proto::FaultKind` as the document shows it.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = FaultKind)]
enum FaultName {
    /// Open sensor or wiring.
    OpenCircuit,
    /// Shorted sensor or wiring.
    Short,
    /// Outside what the sensor can measure.
    OutOfRange,
    /// The bus transfer failed its CRC.
    Crc,
    /// The sensor did not answer.
    NoResponse,
    /// The value has not moved for longer than a real probe's noise allows.
    Stuck,
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

#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}/readings",
    tag = "devices",
    summary = "Stored readings of a device in (boot, seq) order, paged: `after` = a previous page's `next`, `limit` 1..10000",
    params(("id" = String, Path, description = "Device id"), Page),
    responses((status = 200, description = "A page of readings", body = ReadingsPage))
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}/gaps",
    tag = "devices",
    summary = "Sequence numbers never received",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "Gaps", body = Vec<Gap>))
)]
async fn gaps(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<Gap>>, ApiError> {
    let d = parse_device(&id)?;
    let g = tokio::task::spawn_blocking(move || s.store.gaps(&d)).await??;
    Ok(Json(
        g.into_iter()
            .map(|(boot, first, last)| Gap { boot, first, last })
            .collect(),
    ))
}

/// Sequence numbers of a boot never received, `first..=last`.
#[derive(Serialize, ToSchema)]
struct Gap {
    boot: u32,
    first: u32,
    last: u32,
}

#[derive(Deserialize, ToSchema)]
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

#[utoipa::path(
    post,
    path = "/api/v1/devices",
    tag = "devices",
    summary = "Register a device (mints a key when none is given; the key is returned once)",
    request_body = AddDevice,
    responses((status = 201, description = "Registered: id, key_fingerprint, replaced, and key when minted", body = DeviceAdded))
)]
async fn add_device(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    JsonBody(b): JsonBody<AddDevice>,
) -> Result<(StatusCode, Json<DeviceAdded>), ApiError> {
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
    let v = tokio::task::spawn_blocking(move || -> Result<DeviceAdded, ApiError> {
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
        Ok(DeviceAdded {
            id: id.as_str().to_string(),
            key_fingerprint: fp,
            replaced,
            key: minted.then(|| hex::encode(key.as_bytes())),
        })
    })
    .await??;
    Ok((StatusCode::CREATED, Json(v)))
}

/// A device registered (`POST /api/v1/devices`).
#[derive(Serialize, ToSchema)]
struct DeviceAdded {
    /// Device id.
    id: String,
    /// Fingerprint of its key.
    key_fingerprint: String,
    /// It was registered before: its key was replaced.
    replaced: bool,
    /// The key the daemon minted, 64 hex digits: shown this once (absent
    /// when the key was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

#[derive(Deserialize, ToSchema)]
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
#[utoipa::path(
    post,
    path = "/api/v1/devices/{id}/reenroll",
    tag = "devices",
    summary = "Re-enroll a device whose flash was wiped or that was replaced under the same id: its boots from now on are stored after everything stored before, without a tamper alarm; optionally with a new key (`key`, or `new_key` to mint one, returned once). Recorded in the audit trail",
    params(("id" = String, Path, description = "Device id")),
    request_body = Reenroll,
    responses((status = 200, description = "The enrollment: number, boot_offset, key_fingerprint, and key when minted", body = Reenrolled))
)]
async fn reenroll(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<Reenroll>,
) -> Result<Json<Reenrolled>, ApiError> {
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
    let v = tokio::task::spawn_blocking(move || -> Result<Reenrolled, ApiError> {
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
        Ok(Reenrolled {
            id: id.as_str().to_string(),
            key: match &new_key {
                Some((key, true)) => Some(hex::encode(key.as_bytes())),
                _ => None,
            },
            enrollment: e,
        })
    })
    .await??;
    Ok(Json(v))
}

/// A re-enrollment (`POST /api/v1/devices/{id}/reenroll`).
#[derive(Serialize, ToSchema)]
struct Reenrolled {
    /// Device id.
    id: String,
    #[serde(flatten)]
    enrollment: crate::registry::Enrollment,
    /// The key the daemon minted (`new_key`), 64 hex digits: shown this
    /// once (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
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
#[utoipa::path(
    get,
    path = "/api/v1/export",
    tag = "ops",
    summary = "Streamed JSON lines: every tree of the database (backup, restored by `coldchain import`); with `readings=true` every stored reading, one readable object a line (device, enrollment, boot, seq, index, time_ms, time, time_source, channel, kind, value and unit or fault)",
    params(ExportQuery),
    responses((status = 200, description = "JSON lines", body = String, content_type = "application/x-ndjson"))
)]
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
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    summary = "Readiness: the store answers, storage is not full, the broker is connected and not in a reconnect loop; 503 names each reason",
    responses((status = 200, description = "`ready`", body = String, content_type = "text/plain"), (status = 503, description = "Not ready: one reason a line", body = String, content_type = "text/plain"))
)]
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
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    summary = "Prometheus metrics (OpenMetrics text): ingest counters, rejections by reason, MQTT connection state and reconnects, store size, outbox depth, open alerts, presence and last seen per device; histograms of publish-to-durable, receive-to-durable, commit and per-shipment evaluation time",
    responses((status = 200, description = "OpenMetrics text", body = String, content_type = "application/openmetrics-text"))
)]
async fn metrics(State(s): State<AppState>) -> Result<Response, ApiError> {
    let text = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let mut snap = s.stats.metrics();
        snap.counters.extend(super::auth::counters(&s));
        snap.gauges.push((
            "coldchain_store_bytes",
            "Database size on disk",
            s.store.size_on_disk()? as i64,
        ));
        snap.gauges.push((
            "coldchain_outbox_depth",
            "Notifications waiting for delivery",
            s.reader.outbox.depth()? as i64,
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

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "ops",
    summary = "This document",
    responses((status = 200, description = "The OpenAPI document", body = serde_json::Value))
)]
async fn openapi() -> Json<serde_json::Value> {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    Json(
        DOC.get_or_init(|| serde_json::to_value(super::openapi::document()).unwrap_or_default())
            .clone(),
    )
}

/// `GET /api/v1/devices/{id}/warming`: the warming rate of every cryogenic
/// shipment the device watched, in time order, flagged when faster than
/// `alerts.shipper_rate_factor` times its first shipments' mean.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}/warming",
    tag = "devices",
    summary = "A dry shipper's warming rates across its cryogenic shipments, flagged when faster than alerts.shipper_rate_factor times its first 3",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "The shipper's warming history", body = crate::holdtime::ShipperHistory))
)]
async fn warming(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let r = tokio::task::spawn_blocking(move || crate::holdtime::history(&s.reader, &id)).await;
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

#[cfg(test)]
mod tests {
    use super::{NewShipmentBody, ReadingDoc};
    use crate::shipment::NewShipment;
    use crate::store::{ReadingRecord, ReadingRow, TimeSource};
    use coldchain_proto::{ChannelKind, FaultKind, Measurement};

    /// The documented hold-time prediction is the status document's: the
    /// engine's prediction with its sentence, nothing else.
    #[test]
    fn the_documented_hold_time_is_the_status_documents() {
        for crossed_ms in [None, Some(7)] {
            let p = coldchain_engine::holdtime::HoldPrediction {
                limit_mc: -150_000,
                crossing_ms: 1,
                band_ms: 2,
                rate_mc_per_h: 3,
                fit_from_ms: 4,
                points: 5,
                after_tilt: true,
                eta_ms: Some(6),
                before_eta_ms: None,
                warning: true,
                crossed_ms,
            };
            let real = coldchain_engine::holdtime::status(Some(&p)).unwrap();
            let doc = super::HoldTimeDoc {
                sentence: p.sentence(),
                prediction: p,
            };
            assert_eq!(serde_json::to_value(&doc).unwrap(), real);
        }
    }

    /// The documented reading is the store's: every channel kind, fault
    /// kind and time source of a real row reads as the documented type and
    /// writes back the same JSON.
    #[test]
    fn the_documented_reading_is_the_stores() {
        let kinds = [
            ChannelKind::Rtd,
            ChannelKind::Thermocouple,
            ChannelKind::Ambient,
            ChannelKind::Humidity,
        ];
        let values = [
            Measurement::Valid(-150_000),
            Measurement::Fault(FaultKind::OpenCircuit),
            Measurement::Fault(FaultKind::Short),
            Measurement::Fault(FaultKind::OutOfRange),
            Measurement::Fault(FaultKind::Crc),
            Measurement::Fault(FaultKind::NoResponse),
            Measurement::Fault(FaultKind::Stuck),
        ];
        let sources = [
            TimeSource::Device,
            TimeSource::Estimated,
            TimeSource::BrokenClock,
            TimeSource::Uptime,
        ];
        // Exhaustive: a new kind does not compile until it is listed above.
        for k in kinds {
            match k {
                ChannelKind::Rtd
                | ChannelKind::Thermocouple
                | ChannelKind::Ambient
                | ChannelKind::Humidity => {}
            }
        }
        for v in values {
            match v {
                Measurement::Valid(_)
                | Measurement::Fault(
                    FaultKind::OpenCircuit
                    | FaultKind::Short
                    | FaultKind::OutOfRange
                    | FaultKind::Crc
                    | FaultKind::NoResponse
                    | FaultKind::Stuck,
                ) => {}
            }
        }
        for t in sources {
            match t {
                TimeSource::Device
                | TimeSource::Estimated
                | TimeSource::BrokenClock
                | TimeSource::Uptime => {}
            }
        }
        let mut n = 0;
        for kind in kinds {
            for value in values {
                for time_source in sources {
                    let row = ReadingRow {
                        device: "d".into(),
                        boot: 1,
                        seq: 2,
                        idx: 3,
                        reading: ReadingRecord {
                            channel: 4,
                            kind,
                            value,
                            time_ms: 5,
                            time_source,
                        },
                    };
                    let real = serde_json::to_value(&row).unwrap();
                    let doc: ReadingDoc = serde_json::from_value(real.clone())
                        .unwrap_or_else(|e| panic!("{real}: {e}"));
                    assert_eq!(serde_json::to_value(&doc).unwrap(), real);
                    n += 1;
                }
            }
        }
        assert_eq!(n, 4 * 7 * 4);
    }

    /// The documented body and the engine's `NewShipment` accept the same
    /// fields: each, with every field given, reads as the other.
    #[test]
    fn the_documented_shipment_body_is_the_engines() {
        let full = serde_json::json!({
            "id": "S1", "product": "p", "din": "G1234 98 654321 00 H",
            "product_code": "S1194", "profile": "fridge",
            "watch": [{"device": "d", "channel": 0}], "origin": "a",
            "destination": "b", "eta_ms": 1, "collection_ms": 2,
            "window_h": 3.0, "departure_ms": 4,
        });
        let body: NewShipmentBody = serde_json::from_value(full.clone()).unwrap();
        let engine: NewShipment = serde_json::from_value(full.clone()).unwrap();
        let back: NewShipmentBody =
            serde_json::from_value(serde_json::to_value(&engine).unwrap()).unwrap();
        assert_eq!(serde_json::to_value(&body).unwrap(), full);
        assert_eq!(serde_json::to_value(&back).unwrap(), full);
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/sites",
    tag = "sites",
    summary = "Every path frames came by (gateway ids, `direct`, `serial`): frames per device with their time span, and the frames refused from each gateway",
    responses((status = 200, description = "The paths by name (gateway id, `direct`, `serial`)", body = BTreeMap<String, crate::sites::PathOverview>))
)]
async fn sites(
    State(s): State<AppState>,
) -> Result<Json<BTreeMap<String, crate::sites::PathOverview>>, ApiError> {
    let v =
        tokio::task::spawn_blocking(move || crate::sites::Paths::open(s.store.db())?.overview())
            .await??;
    Ok(Json(v))
}
