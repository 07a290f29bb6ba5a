//! The report's routes: the arrival report in its forms, the verification
//! of a saved copy, and the EPCIS document of a shipment.
//!
//! * `GET /api/v1/shipments/{id}/report?format=html|csv|json|pdf[&as_of_ms=N]`
//! * `POST /api/v1/reports/verify` with the file's content as the body:
//!   a [`Verification`](crate::report::Verification) as JSON (404 if the
//!   shipment is unknown, 400 if the body is not a Coldchain report).
//! * `GET /api/v1/shipments/{id}/epcis[?as_of_ms=N]`: `application/ld+json`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::epcis::document;
use crate::report::{self, Format, file_stem, for_shipment, identify_file, render, verify};

/// Routes of the report, merged into the API router.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(report))
        .routes(routes!(verify_endpoint))
        .routes(routes!(epcis))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ReportQuery {
    format: Option<String>,
    as_of_ms: Option<i64>,
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": msg.into() })),
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/api/v1/shipments/{id}/report",
    tag = "reports",
    summary = "Arrival report; `format` = html, csv, json or pdf (PDF/A-3u)",
    params(("id" = String, Path, description = "Shipment id (URL-encoded)"), ReportQuery),
    responses((status = 200, description = "The report in the format asked (text/html, text/csv, or application/json)", body = String, content_type = "text/html"), (status = 200, description = "The PDF/A form (format=pdf)", body = Vec<u8>, content_type = "application/pdf"))
)]
async fn report(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ReportQuery>,
) -> Response {
    let fmt_text = q.format.as_deref().unwrap_or("html");
    let Some(format) = Format::parse(fmt_text) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("format={fmt_text:?}: expected html, csv, json or pdf"),
        );
    };
    let now = crate::ingest::now_ms();
    let as_of = q.as_of_ms.unwrap_or(now).min(now);
    let id2 = id.clone();
    let built = tokio::task::spawn_blocking(move || {
        for_shipment(&s.reader, &s.store, &id2, as_of).map(|d| d.map(|d| render(&d, format)))
    })
    .await;
    let body = match built {
        Ok(Ok(Some(b))) => b,
        Ok(Ok(None)) => return error(StatusCode::NOT_FOUND, format!("no shipment {id:?}")),
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let stem = file_stem(&id);
    match format {
        Format::Html => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'".to_string(),
                ),
            ],
            body,
        )
            .into_response(),
        Format::Csv => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"report-{stem}.csv\""),
                ),
            ],
            body,
        )
            .into_response(),
        Format::Json => (
            [(header::CONTENT_TYPE, "application/json".to_string())],
            body,
        )
            .into_response(),
        Format::Pdf => (
            [
                (header::CONTENT_TYPE, "application/pdf".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("inline; filename=\"report-{stem}.pdf\""),
                ),
            ],
            body,
        )
            .into_response(),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/reports/verify",
    tag = "reports",
    summary = "Check a saved report file (its text as the body) against the daemon's data now: `ok`, `data_unchanged`, `file_intact`, `changed_sections`, `problems`",
    request_body(content = Vec<u8>, description = "The report file (HTML, CSV, JSON or PDF form)", content_type = "application/octet-stream"),
    responses((status = 200, description = "The verification", body = crate::report::Verification))
)]
async fn verify_endpoint(State(s): State<AppState>, body: Bytes) -> Response {
    let id = match identify_file(&body) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let shipment = id.shipment.clone();
    // Rebuilding the data and rendering a PDF again are CPU work: off the
    // async threads.
    let r = tokio::task::spawn_blocking(move || {
        for_shipment(&s.reader, &s.store, &id.shipment, id.as_of_ms)
            .map(|c| c.map(|current| verify(&body, &current)))
    })
    .await;
    match r {
        Ok(Ok(Some(v))) => match v {
            Ok(v) => axum::Json(v).into_response(),
            Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
        },
        Ok(Ok(None)) => error(
            StatusCode::NOT_FOUND,
            format!("no shipment {shipment:?} in this daemon"),
        ),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EpcisQuery {
    as_of_ms: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/shipments/{id}/epcis",
    tag = "reports",
    summary = "EPCIS 2.0 document (JSON-LD) of the shipment; see docs/epcis.md",
    params(("id" = String, Path, description = "Shipment id (URL-encoded)"), EpcisQuery),
    responses((status = 200, description = "The EPCISDocument", body = String, content_type = "application/ld+json"))
)]
async fn epcis(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<EpcisQuery>,
) -> Response {
    let now = crate::ingest::now_ms();
    let as_of = q.as_of_ms.unwrap_or(now).min(now);
    let id2 = id.clone();
    let built = tokio::task::spawn_blocking(move || {
        report::for_shipment(&s.reader, &s.store, &id2, as_of).map(|d| d.map(|d| document(&d)))
    })
    .await;
    let (status, body) = match built {
        Ok(Ok(Some(doc))) => {
            let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
            text.push('\n');
            return (
                [
                    (header::CONTENT_TYPE, "application/ld+json".to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!(
                            "inline; filename=\"epcis-{}.jsonld\"",
                            report::file_stem(&id)
                        ),
                    ),
                ],
                text,
            )
                .into_response();
        }
        Ok(Ok(None)) => (StatusCode::NOT_FOUND, format!("no shipment {id:?}")),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    (status, axum::Json(json!({ "error": body }))).into_response()
}
