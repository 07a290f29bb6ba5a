//! The OpenAPI 3.0 document of the HTTP API, served at `/api/v1/openapi.json`.
//!
//! Written by hand next to the router; `tests/tests/api_contract.rs` requests
//! every operation listed here from a running daemon and fails if the server
//! does not route it, so the document cannot drift from what the server does.

use serde_json::{Value, json};

fn op(summary: &str, tag: &str) -> Value {
    json!({ "summary": summary, "tags": [tag], "responses": {
        "200": { "description": "OK" },
        "400": { "$ref": "#/components/responses/Error" },
        "401": { "$ref": "#/components/responses/Error" },
        "404": { "$ref": "#/components/responses/Error" }
    }})
}

fn change(summary: &str, tag: &str, required: &[&str], props: Value) -> Value {
    let mut o = op(summary, tag);
    o["security"] = json!([{ "bearer": [] }]);
    o["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": {
        "type": "object", "required": required, "properties": props, "additionalProperties": false
    }}}});
    o["responses"]["409"] = json!({ "$ref": "#/components/responses/Error" });
    o
}

fn id_param(name: &str, what: &str) -> Value {
    json!([{ "name": name, "in": "path", "required": true, "description": what, "schema": { "type": "string" } }])
}

/// The document.
pub fn document() -> Value {
    let by = json!({ "type": "string", "description": "who makes the change (recorded in the audit trail)" });
    let at = json!({ "type": "integer", "format": "int64", "description": "ms since the Unix epoch; default now" });
    let ship = id_param("id", "shipment id (URL-encoded)");
    let with = |mut o: Value, params: &Value| {
        o["parameters"] = params.clone();
        o
    };
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Coldchain daemon API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Shipments, alerts, devices and readings of a Coldchain edge daemon. Every change needs `Authorization: Bearer <http.token>`; reads need it too when the daemon listens on a non-loopback address. Errors are JSON: `{\"error\": \"...\"}`."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": { "Error": { "description": "error", "content": { "application/json": { "schema": {
                "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } } } } } } }
        },
        "paths": {
            "/healthz": { "get": op("Liveness: `ok`", "ops") },
            "/readyz": { "get": op("Readiness: the store answers, storage is not full, the broker is connected and not in a reconnect loop; 503 names each reason", "ops") },
            "/metrics": { "get": op("Prometheus metrics (OpenMetrics text): ingest counters, rejections by reason, MQTT connection state and reconnects, store size, outbox depth, open alerts, presence and last seen per device; histograms of publish-to-durable, receive-to-durable, commit and per-shipment evaluation time", "ops") },
            "/api/v1/openapi.json": { "get": op("This document", "ops") },
            "/api/v1/stats": { "get": op("Ingest counters as JSON", "ops") },
            "/api/v1/export": { "get": op("Streamed JSON lines: every tree of the database (backup, restored by `coldchain import`); with `readings=true` every stored reading, one readable object a line (device, enrollment, boot, seq, index, time_ms, time, time_source, channel, kind, value and unit or fault)", "ops") },
            "/api/v1/devices": {
                "get": op("Registered and seen devices", "devices"),
                "post": change("Register a device (mints a key when none is given; the key is returned once)", "devices",
                    &["by", "id"], json!({ "by": by, "id": { "type": "string" },
                        "key": { "type": "string", "description": "64 hex digits" },
                        "allow_unsigned_json": { "type": "boolean" } }))
            },
            "/api/v1/devices/{id}/readings": { "get": with(op("Stored readings of a device in (boot, seq) order, paged: `after` = a previous page's `next`, `limit` 1..10000", "devices"), &id_param("id", "device id")) },
            "/api/v1/devices/{id}/gaps": { "get": with(op("Sequence numbers never received", "devices"), &id_param("id", "device id")) },
            "/api/v1/devices/{id}/reenroll": { "post": with(change("Re-enroll a device whose flash was wiped or that was replaced under the same id: its boots from now on are stored after everything stored before, without a tamper alarm; optionally with a new key (`key`, or `new_key` to mint one, returned once). Recorded in the audit trail", "devices",
                &["by", "reason"], json!({ "by": by, "reason": { "type": "string" },
                    "key": { "type": "string", "description": "64 hex digits" },
                    "new_key": { "type": "boolean" } })), &id_param("id", "device id")) },
            "/api/v1/shipments": {
                "get": op("Shipments with their status", "shipments"),
                "post": change("Create a shipment (in transit at once when `departure_ms` is given)", "shipments",
                    &["by", "id", "product", "profile", "watch", "origin", "destination"],
                    json!({ "by": by, "id": { "type": "string" }, "product": { "type": "string" },
                        "din": { "type": "string", "description": "ISBT 128 DIN with flags and check character, e.g. G1234 98 654321 00 H; refused (400) when its structure, flags or ISO 7064 Mod 37-2 check character is wrong" },
                        "product_code": { "type": "string", "description": "ISBT 128 product code, e.g. S1194 (shape checked only)" },
                        "profile": { "type": "string" },
                        "watch": { "type": "array", "items": { "type": "object", "required": ["device", "channel"],
                            "properties": { "device": { "type": "string" }, "channel": { "type": "integer" } } } },
                        "origin": { "type": "string" }, "destination": { "type": "string" },
                        "eta_ms": at, "collection_ms": at, "departure_ms": at,
                        "window_h": { "type": "number" } }))
            },
            "/api/v1/shipments/{id}": { "get": with(op("A shipment: status, full evaluation, alerts, audit entries", "shipments"), &ship) },
            "/api/v1/shipments/{id}/depart": { "post": with(change("planned -> in transit", "shipments", &["by"], json!({ "by": by, "at_ms": at })), &ship) },
            "/api/v1/shipments/{id}/eta": { "post": with(change("Update the ETA", "shipments", &["by", "eta_ms"], json!({ "by": by, "eta_ms": at })), &ship) },
            "/api/v1/shipments/{id}/handoff": { "post": with(change("Record a custody hand-off", "shipments", &["by", "to", "location"],
                json!({ "by": by, "to": { "type": "string" }, "location": { "type": "string" }, "at_ms": at })), &ship) },
            "/api/v1/shipments/{id}/arrive": { "post": with(change("in transit -> arrived", "shipments", &["by"], json!({ "by": by, "at_ms": at })), &ship) },
            "/api/v1/shipments/{id}/close": { "post": with(change("arrived -> closed, with a person's disposition", "shipments", &["by", "decision", "comment"],
                json!({ "by": by, "decision": { "type": "string", "enum": ["accepted", "quarantined", "rejected"] }, "comment": { "type": "string" } })), &ship) },
            "/api/v1/shipments/{id}/report": { "get": with(op("Arrival report; `format` = html, csv or json", "reports"), &ship) },
            "/api/v1/devices/{id}/warming": { "get": with(op("A dry shipper's warming rates across its cryogenic shipments, flagged when faster than alerts.shipper_rate_factor times its first 3", "devices"), &id_param("id", "device id")) },
            "/api/v1/shipments/{id}/epcis": { "get": with(op("EPCIS 2.0 document (JSON-LD) of the shipment; see docs/epcis.md", "reports"), &ship) },
            "/api/v1/alerts": { "get": op("Alerts; `open=true` for unresolved ones, `shipment=` to filter", "alerts") },
            "/api/v1/alerts/{id}/ack": { "post": with(change("Acknowledge an alert", "alerts", &["by", "comment"], json!({ "by": by, "comment": { "type": "string" } })), &id_param("id", "alert id")) },
            "/api/v1/audit": { "get": op("Audit trail entries, oldest first; `after` = seq, `limit`", "audit") },
            "/api/v1/audit/verify": { "get": op("Walk the hash chain: `ok`, `entries`, `head`, `problems`", "audit") }
        }
    })
}
