//! The OpenAPI 3.1 document of the HTTP API, served at `/api/v1/openapi.json`,
//! generated from the handlers (utoipa): each handler carries its
//! `#[utoipa::path]` (method, path, parameters, request and response
//! schemas), and `utoipa_axum::routes!` registers it with the router at that
//! very path, so what is documented and what is served come from one place.
//!
//! Checked both ways: `tests/tests/api_contract.rs` requests every operation
//! of the document from a running daemon and fails if one is not served; the
//! test below fails if a route is added to the HTTP layer other than through
//! `routes!` (only the dashboard's pages and assets are plain routes).

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, OpenApi as Doc, Ref, RefOr, ResponseBuilder, SecurityRequirement,
};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error answer: `{"error": "..."}`, saying what was wrong.
#[derive(Debug, ToSchema)]
pub struct ErrorBody {
    /// What was wrong, for people.
    pub error: String,
}

/// The parts of the document that are not a handler's.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Coldchain daemon API",
        description = "Shipments, alerts, devices and readings of a Coldchain edge daemon. Every change needs an authenticated person whose role allows it: `Authorization: Bearer <personal token>` (`coldchain token create`; the legacy `http.token` is an admin identity that cannot sign), or a session cookie from `POST /api/v1/login` with its CSRF token in `X-CSRF-Token`. Reads need one too beyond loopback or with `http.anonymous_reads = false`. 401: no or a bad credential; 403: the role may not. Errors are JSON: `{\"error\": \"...\"}`."
    ),
    components(schemas(ErrorBody)),
    modifiers(&Common),
    tags(
        (name = "ops", description = "Health, readiness, metrics, counters, backup"),
        (name = "devices", description = "Devices and their readings"),
        (name = "shipments", description = "Shipments and their lifecycle"),
        (name = "alerts", description = "Alerts, acknowledgements, QA assessments"),
        (name = "reports", description = "The arrival report, its verification, EPCIS"),
        (name = "audit", description = "The audit trail"),
        (name = "people", description = "Sessions, accounts, personal tokens"),
    )
)]
pub struct ApiDoc;

/// What every operation shares: the error answers, and for changes the
/// credentials (all but logging in) and 409.
struct Common;

impl Modify for Common {
    fn modify(&self, doc: &mut Doc) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.security_schemes.insert(
            "bearer".into(),
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.security_schemes.insert(
            "session".into(),
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(super::state::COOKIE))),
        );
        components.responses.insert(
            "Error".into(),
            RefOr::T(
                ResponseBuilder::new()
                    .description("An error: what was wrong")
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            ),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops = [(false, item.get.as_mut()), (true, item.post.as_mut())];
            for (change, op) in ops {
                let Some(op) = op else { continue };
                let mut codes = vec!["400", "401", "403", "404"];
                if change {
                    codes.push("409");
                }
                for c in codes {
                    op.responses
                        .responses
                        .entry(c.into())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name("Error")));
                }
                if change && path != "/api/v1/login" {
                    op.security = Some(vec![
                        SecurityRequirement::new("bearer", Vec::<String>::new()),
                        SecurityRequirement::new("session", Vec::<String>::new()),
                    ]);
                }
            }
        }
    }
}

/// The document, as served.
pub fn document() -> Doc {
    super::documented().into_openapi()
}

#[cfg(test)]
mod tests {
    /// The HTTP layer's sources: every file of `src/http/` (read at test
    /// time, so a new file is not missed).
    fn sources() -> Vec<(String, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).expect("src/http") {
            let p = e.expect("dir entry").path();
            if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).expect("read source");
                // The code, without its tests (this one names what it looks for).
                let code = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
                out.push((p.display().to_string(), code));
            }
        }
        assert!(out.len() >= 6, "{} sources in {}", out.len(), dir.display());
        out
    }

    /// Routes served without documentation: the dashboard's pages, their
    /// fragments and assets (HTML and files, not the API).
    const PAGES: [&str; 9] = [
        "/",
        "/login",
        "/shipments/{id}",
        "/ui/list",
        "/ui/shipments/{id}",
        "/devices/{id}",
        "/ui/devices/{id}",
        "/assets/dashboard.css",
        "/assets/dashboard.js",
    ];

    /// Served, so documented: every route of the HTTP layer is added through
    /// `routes!` (documented by construction) or is one of [`PAGES`]; a
    /// plain `.route(` or `.route_service(`/`.nest(` of anything else fails
    /// here.
    #[test]
    fn every_served_route_is_documented() {
        let mut pages = Vec::new();
        for (file, src) in sources() {
            for kind in [".route_service(", ".nest(", ".nest_service("] {
                assert!(!src.contains(kind), "{file}: {kind} bypasses the document");
            }
            for chunk in src.split(".route(").skip(1) {
                let path = chunk.split('"').nth(1).unwrap_or("");
                assert!(
                    PAGES.contains(&path),
                    "{file}: route {path:?} is served but not documented: add it with utoipa_axum::routes! and a #[utoipa::path]"
                );
                pages.push(path.to_string());
            }
        }
        pages.sort();
        let mut want: Vec<String> = PAGES.iter().map(|p| p.to_string()).collect();
        want.sort();
        assert_eq!(pages, want, "the dashboard's routes");
        // And the document has no page in it.
        let doc = super::document();
        for p in PAGES {
            assert!(!doc.paths.paths.contains_key(p), "{p} is a page");
        }
    }

    /// Every operation has a summary, a success answer with its content,
    /// and every change its request body (or none, said so); path
    /// parameters are declared.
    #[test]
    fn operations_carry_schemas_and_parameters() {
        let doc = serde_json::to_value(super::document()).expect("document as JSON");
        let paths = doc["paths"].as_object().expect("paths");
        let mut n = 0;
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("path item") {
                n += 1;
                let what = format!("{method} {path}");
                assert!(op["summary"].is_string(), "{what}: no summary");
                let ok = op["responses"]
                    .as_object()
                    .expect("responses")
                    .iter()
                    .find(|(c, _)| c.starts_with('2'));
                let (_, ok) = ok.unwrap_or_else(|| panic!("{what}: no 2xx answer"));
                assert!(ok["content"].is_object(), "{what}: 2xx without content");
                for p in path.split('{').skip(1) {
                    let name = p.split('}').next().unwrap_or("");
                    let declared = op["parameters"].as_array().is_some_and(|ps| {
                        ps.iter().any(|x| x["name"] == name && x["in"] == "path")
                    });
                    assert!(declared, "{what}: path parameter {name} not declared");
                }
            }
        }
        assert!(n >= 40, "only {n} operations");
        // Spot checks that the schemas are the handlers' types.
        let close = &doc["paths"]["/api/v1/shipments/{id}/close"]["post"];
        assert!(close["requestBody"]["required"] == true, "{close}");
        let s = &doc["components"]["schemas"]["CloseBody"];
        for f in ["decision", "comment", "password"] {
            assert!(
                s["required"].as_array().unwrap().iter().any(|x| x == f),
                "{s}"
            );
        }
        let readings = &doc["paths"]["/api/v1/devices/{id}/readings"]["get"];
        let names: Vec<&str> = readings["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(names, ["after", "limit"], "{readings}");
    }

    /// No operation answers "any JSON": every JSON answer (request bodies
    /// too) refers to a named schema, but this document's own.
    #[test]
    fn no_answer_is_any_json() {
        let doc = serde_json::to_value(super::document()).expect("document as JSON");
        let mut untyped = Vec::new();
        let mut n = 0;
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let mut bodies: Vec<(String, &serde_json::Value)> = op["responses"]
                    .as_object()
                    .expect("responses")
                    .iter()
                    .filter(|(c, _)| c.starts_with('2'))
                    .map(|(c, r)| (c.clone(), &r["content"]["application/json"]))
                    .collect();
                bodies.push((
                    "request".into(),
                    &op["requestBody"]["content"]["application/json"],
                ));
                for (what, content) in bodies {
                    if content.is_null() {
                        continue;
                    }
                    n += 1;
                    if !content["schema"]
                        .to_string()
                        .contains("#/components/schemas/")
                    {
                        untyped.push(format!("{method} {path} {what}: {content}"));
                    }
                }
            }
        }
        assert!(n >= 40, "only {n} JSON bodies");
        assert_eq!(
            untyped,
            ["get /api/v1/openapi.json 200: {\"schema\":{}}"],
            "JSON bodies without a named schema"
        );
    }

    /// The main answers have named schemas (not "any JSON"), and those
    /// schemas name the fields the handlers' types carry.
    #[test]
    fn main_answers_have_schemas() {
        let doc = serde_json::to_value(super::document()).expect("document as JSON");
        for (path, method, schema) in [
            ("/api/v1/alerts", "get", "Alert"),
            ("/api/v1/shipments", "get", "ShipmentRow"),
            ("/api/v1/shipments/{id}", "get", "ShipmentDetail"),
            ("/api/v1/audit", "get", "AuditEntryDoc"),
            ("/api/v1/audit/verify", "get", "Verification"),
            ("/api/v1/reports/verify", "post", "Verification"),
            ("/api/v1/users", "get", "UserInfo"),
            ("/api/v1/users", "post", "UserInfo"),
            ("/api/v1/users/{name}/disable", "post", "UserInfo"),
            ("/api/v1/tokens", "get", "ApiToken"),
            ("/api/v1/tokens/{id}/revoke", "post", "ApiToken"),
            ("/api/v1/tokens", "post", "TokenMinted"),
            ("/api/v1/stats", "get", "Stats"),
            ("/api/v1/login", "post", "LoggedIn"),
            ("/api/v1/logout", "post", "LoggedOut"),
            ("/api/v1/me", "get", "Me"),
            ("/api/v1/me/password", "post", "PasswordChanged"),
            ("/api/v1/users/{name}/reset", "post", "PasswordReset"),
            ("/api/v1/devices", "post", "DeviceAdded"),
            ("/api/v1/devices/{id}/reenroll", "post", "Reenrolled"),
            ("/api/v1/devices/{id}/warming", "get", "ShipperHistory"),
            ("/api/v1/devices/{id}/readings", "get", "ReadingsPage"),
            ("/api/v1/sites", "get", "PathOverview"),
            ("/api/v1/shipments", "post", "Shipment"),
            ("/api/v1/shipments/{id}/close", "post", "Shipment"),
            ("/api/v1/alerts/{id}/ack", "post", "Alert"),
            ("/api/v1/alerts/{id}/assess", "post", "Assessment"),
        ] {
            let op = &doc["paths"][path][method];
            let ok = op["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path}"))
                .iter()
                .find(|(c, _)| c.starts_with('2'))
                .map(|(_, r)| r["content"]["application/json"]["schema"].to_string())
                .unwrap_or_default();
            assert!(
                ok.contains(&format!("/{schema}\"")),
                "{method} {path}: answer schema {ok}, expected {schema}"
            );
        }
        let s = &doc["components"]["schemas"];
        let required = |name: &str| -> Vec<String> {
            s[name]["required"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: {}", s[name]))
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect()
        };
        for f in [
            "id",
            "shipment",
            "condition",
            "severity",
            "state",
            "raised_ms",
        ] {
            assert!(
                required("Alert").contains(&f.to_string()),
                "Alert lacks {f}"
            );
        }
        for f in ["id", "product", "profile", "watch", "state", "created_ms"] {
            assert!(
                required("Shipment").contains(&f.to_string()),
                "Shipment lacks {f}"
            );
        }
        for f in ["seq", "at_ms", "action", "subject", "prev", "hash"] {
            assert!(
                required("AuditEntry").contains(&f.to_string()),
                "AuditEntry lacks {f}"
            );
        }
        assert!(!required("UserInfo").iter().any(|f| f.contains("hash")));
        assert_eq!(
            s["Severity"]["enum"],
            serde_json::json!(["info", "warning", "critical"])
        );
    }
}
