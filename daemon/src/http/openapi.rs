//! The OpenAPI 3.0 document of the HTTP API, served at `/api/v1/openapi.json`.
//!
//! Written by hand next to the router; `tests/tests/api_contract.rs` requests
//! every operation listed here from a running daemon and fails if the server
//! does not route it, and the test below finds every route in the routers'
//! source and fails if it is not listed here: the document cannot drift from
//! what the server does, in either direction.

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

/// An operation that needs no credential (logging in).
fn public(mut o: Value) -> Value {
    if let Some(m) = o.as_object_mut() {
        m.remove("security");
    }
    o
}

fn id_param(name: &str, what: &str) -> Value {
    json!([{ "name": name, "in": "path", "required": true, "description": what, "schema": { "type": "string" } }])
}

/// The document.
pub fn document() -> Value {
    let by = json!({ "type": "string", "description": "accepted and ignored: the audit trail records the authenticated person" });
    let at = json!({ "type": "integer", "format": "int64", "description": "ms since the Unix epoch; default now" });
    let ship = id_param("id", "shipment id (URL-encoded)");
    let with = |mut o: Value, params: &Value| {
        o["parameters"] = params.clone();
        o
    };
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Coldchain daemon API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Shipments, alerts, devices and readings of a Coldchain edge daemon. Every change needs an authenticated person whose role allows it: `Authorization: Bearer <personal token>` (`coldchain token create`; the legacy `http.token` is an admin identity that cannot sign), or a session cookie from `POST /api/v1/login` with its CSRF token in `X-CSRF-Token`. Reads need one too beyond loopback or with `http.anonymous_reads = false`. 401: no or a bad credential; 403: the role may not. Errors are JSON: `{\"error\": \"...\"}`."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" },
                "session": { "type": "apiKey", "in": "cookie", "name": "coldchain_session" } },
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
                    &["id"], json!({ "by": by, "id": { "type": "string" },
                        "key": { "type": "string", "description": "64 hex digits" },
                        "allow_unsigned_json": { "type": "boolean" } }))
            },
            "/api/v1/devices/{id}/readings": { "get": with(op("Stored readings of a device in (boot, seq) order, paged: `after` = a previous page's `next`, `limit` 1..10000", "devices"), &id_param("id", "device id")) },
            "/api/v1/devices/{id}/gaps": { "get": with(op("Sequence numbers never received", "devices"), &id_param("id", "device id")) },
            "/api/v1/devices/{id}/reenroll": { "post": with(change("Re-enroll a device whose flash was wiped or that was replaced under the same id: its boots from now on are stored after everything stored before, without a tamper alarm; optionally with a new key (`key`, or `new_key` to mint one, returned once). Recorded in the audit trail", "devices",
                &["reason"], json!({ "by": by, "reason": { "type": "string" },
                    "key": { "type": "string", "description": "64 hex digits" },
                    "new_key": { "type": "boolean" } })), &id_param("id", "device id")) },
            "/api/v1/shipments": {
                "get": op("Shipments with their status", "shipments"),
                "post": change("Create a shipment (in transit at once when `departure_ms` is given)", "shipments",
                    &["id", "product", "profile", "watch", "origin", "destination"],
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
            "/api/v1/shipments/{id}/depart": { "post": with(change("planned -> in transit", "shipments", &[], json!({ "by": by, "at_ms": at })), &ship) },
            "/api/v1/shipments/{id}/eta": { "post": with(change("Update the ETA", "shipments", &["eta_ms"], json!({ "by": by, "eta_ms": at })), &ship) },
            "/api/v1/shipments/{id}/handoff": { "post": with(change("Record a custody hand-off", "shipments", &["to", "location"],
                json!({ "by": by, "to": { "type": "string" }, "location": { "type": "string" }, "at_ms": at })), &ship) },
            "/api/v1/shipments/{id}/arrive": { "post": with(change("in transit -> arrived", "shipments", &[], json!({ "by": by, "at_ms": at })), &ship) },
            "/api/v1/shipments/{id}/close": { "post": with(change("arrived -> closed: the disposition as an electronic signature by a QA person (their password again; meaning `released for use`, `quarantined` or `rejected`; covers the report's content SHA-256). A release is refused (409) until each alert not withdrawn has a QA assessment", "shipments", &["decision", "comment", "password"],
                json!({ "by": by, "decision": { "type": "string", "enum": ["accepted", "quarantined", "rejected"] }, "comment": { "type": "string" },
                    "password": { "type": "string", "description": "the signer's password, asked again" },
                    "report_sha256": { "type": "string", "description": "the content SHA-256 of the report the signer reviewed; refused (409) if it changed" } })), &ship) },
            "/api/v1/reports/verify": { "post": op("Check a saved report file (its text as the body) against the daemon's data now: `ok`, `data_unchanged`, `file_intact`, `changed_sections`, `problems`", "reports") },
            "/api/v1/shipments/{id}/report": { "get": with(op("Arrival report; `format` = html, csv or json", "reports"), &ship) },
            "/api/v1/devices/{id}/warming": { "get": with(op("A dry shipper's warming rates across its cryogenic shipments, flagged when faster than alerts.shipper_rate_factor times its first 3", "devices"), &id_param("id", "device id")) },
            "/api/v1/shipments/{id}/epcis": { "get": with(op("EPCIS 2.0 document (JSON-LD) of the shipment; see docs/epcis.md", "reports"), &ship) },
            "/api/v1/alerts": { "get": op("Alerts; `open=true` for unresolved ones, `shipment=` to filter", "alerts") },
            "/api/v1/alerts/{id}/ack": { "post": with(change("Acknowledge an alert (logistics, qa, admin)", "alerts", &["comment"], json!({ "by": by, "comment": { "type": "string" } })), &id_param("id", "alert id")) },
            "/api/v1/alerts/{id}/assess": { "post": with(change("QA's assessment of an alert's impact on the product (once; needed before a release)", "alerts", &["comment"], json!({ "comment": { "type": "string" } })), &id_param("id", "alert id")) },
            "/api/v1/audit": { "get": op("Audit trail entries, oldest first; `after` = seq, `limit`", "audit") },
            "/api/v1/audit/verify": { "get": op("Walk the hash chain: `ok`, `entries`, `head`, `problems`", "audit") }
        }
    });
    // People: in a second part (one json! of every path exceeds the macro's
    // recursion limit).
    let people = people_paths();
    if let (Some(paths), Some(more)) = (doc["paths"].as_object_mut(), people.as_object()) {
        for (k, v) in more {
            paths.insert(k.clone(), v.clone());
        }
    }
    doc
}

/// Login, sessions, accounts and tokens.
fn people_paths() -> Value {
    let with = |mut o: Value, params: &Value| {
        o["parameters"] = params.clone();
        o
    };
    json!({
            "/api/v1/login": { "post": public(change("Log in: sets the session cookie (HttpOnly, SameSite=Strict, Secure on TLS); the answer carries the CSRF token. 401 after a wrong password (counted; the account locks after http.lockout_after)", "people", &["name", "password"],
                json!({ "name": { "type": "string" }, "password": { "type": "string" } }))) },
            "/api/v1/logout": { "post": change("End the session", "people", &[], json!({})) },
            "/api/v1/me": { "get": op("The authenticated person: user, full_name, role, via (and the session's csrf)", "people") },
            "/api/v1/me/password": { "post": change("Change your password", "people", &["old_password", "new_password"],
                json!({ "old_password": { "type": "string" }, "new_password": { "type": "string", "description": "at least 12 characters" } })) },
            "/api/v1/users": {
                "get": op("People (admin)", "people"),
                "post": change("Add a person (admin)", "people", &["name", "full_name", "role", "password"],
                    json!({ "name": { "type": "string", "description": "1-32 of a-z 0-9 . _ -" }, "full_name": { "type": "string" },
                        "role": { "type": "string", "enum": ["viewer", "logistics", "qa", "admin"] }, "password": { "type": "string" } }))
            },
            "/api/v1/users/{name}/disable": { "post": with(change("Disable an account (admin): sessions end, tokens refused", "people", &[], json!({})), &id_param("name", "login name")) },
            "/api/v1/users/{name}/enable": { "post": with(change("Enable an account (admin)", "people", &[], json!({})), &id_param("name", "login name")) },
            "/api/v1/users/{name}/reset": { "post": with(change("Force a password reset (admin): unlocks; a temporary password (given, or generated and returned once); the person must choose a new one", "people", &[],
                json!({ "password": { "type": "string" } })), &id_param("name", "login name")) },
            "/api/v1/tokens": {
                "get": op("Personal API tokens (yours; an admin's: everyone's), without secrets", "people"),
                "post": change("Mint a personal API token, returned once as `token` (admins may give `user`)", "people", &["label"],
                    json!({ "label": { "type": "string" }, "user": { "type": "string" } }))
            },
            "/api/v1/tokens/{id}/revoke": { "post": with(change("Revoke a token (its owner or an admin)", "people", &[], json!({})), &id_param("id", "token id")) }
    })
}

#[cfg(test)]
mod tests {
    /// Every route of the routers (read from their source) that is not a
    /// dashboard page is in the document, with each of its methods.
    #[test]
    fn every_served_operation_is_documented() {
        let doc = super::document();
        let sources = [
            include_str!("api.rs"),
            include_str!("auth.rs"),
            include_str!("report.rs"),
            include_str!("dashboard.rs"),
        ];
        let mut found = 0;
        for src in sources {
            for chunk in src.split(".route(").skip(1) {
                let Some(path) = chunk.split('"').nth(1) else {
                    continue;
                };
                let page = ["/", "/login"].contains(&path)
                    || ["/shipments/", "/devices/", "/ui/", "/assets/"]
                        .iter()
                        .any(|p| path.starts_with(p));
                if !path.starts_with('/') || page {
                    continue;
                }
                // The handlers of this route: up to the end of its call.
                let call = chunk.split("))").next().unwrap_or("");
                let mut methods = Vec::new();
                if call.contains("get(") {
                    methods.push("get");
                }
                if call.contains("post(") {
                    methods.push("post");
                }
                assert!(!methods.is_empty(), "route {path}: no method found");
                for m in methods {
                    assert!(
                        doc["paths"][path][m].is_object(),
                        "{m} {path} is served but not in the OpenAPI document"
                    );
                    found += 1;
                }
            }
        }
        assert!(found >= 35, "only {found} operations found in the routers");
    }
}
