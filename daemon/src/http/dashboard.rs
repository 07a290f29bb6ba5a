//! The live dashboard, served by the daemon: server-rendered HTML with a
//! little vanilla JavaScript (no build step; the assets are compiled in).
//!
//! * `/`: the shipments, sorted by risk ([`risk`]): unacknowledged critical
//!   alerts first, then unacknowledged warnings, then acknowledged but open
//!   alerts, then the least viability window left; closed shipments last.
//! * `/shipments/{id}`: the temperature chart (the report's SVG: alarm zones
//!   as bands, excursions marked), the viability window as a gauge, the alert
//!   timeline with acknowledge buttons, links to the arrival report.
//! * `/ui/list` and `/ui/shipments/{id}`: the same content without the page
//!   around it; the pages poll them every few seconds and swap them in.
//!
//! * `/login`: name and password; a session cookie (`HttpOnly`,
//!   `SameSite=Strict`, `Secure` on TLS) is all the browser keeps: no
//!   credential in `localStorage`. A session ends after `http.session_idle_s`
//!   without a person's request (the pages' polling does not count).
//!
//! What a role may not do is not offered: the acknowledge, assess and sign
//! buttons appear only for roles that may use them (the API refuses the
//! rest anyway). Changes POST JSON with the page's CSRF token
//! (`X-CSRF-Token`, from the `csrf-token` meta element). Signing asks for the
//! password again and shows the SHA-256 of the report being signed.
//!
//! When reads need a login (beyond loopback, or `http.anonymous_reads =
//! false`), a page requested without a session comes without data and sends
//! the browser to `/login`.
//!
//! All user text (shipment ids, products, comments) is escaped on the server;
//! the script inserts only server-rendered fragments and sets dialog text with
//! `textContent`. Pages carry a Content-Security-Policy that allows no inline
//! script and nothing from other origins.

use std::cmp::Ordering;
use std::fmt::Write;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use super::api::{AppState, PageAccess};
use crate::alert::{Alert, AlertState};
use crate::profile::Severity;
use crate::report::text::{esc, fmt_c, fmt_dur, url_segment, utc};
use crate::report::{self, ReportData};
use crate::shipment::{Shipment, State as ShipState};
use crate::users::{Actor, Perm, Role};

const CSS: &str = include_str!("dashboard/dashboard.css");
const JS: &str = include_str!("dashboard/dashboard.js");
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// Seconds between live updates.
const POLL_S: u32 = 5;

/// Routes of the dashboard, merged into the API router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(list_page))
        .route("/login", get(login_page))
        .route("/shipments/{id}", get(shipment_page))
        .route("/ui/list", get(list_fragment))
        .route("/ui/shipments/{id}", get(shipment_fragment))
        .route("/devices/{id}", get(device_page))
        .route("/ui/devices/{id}", get(device_fragment))
        .route(
            "/assets/dashboard.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/assets/dashboard.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
}

fn asset(ct: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// One row of the shipment list.
#[derive(Debug, Clone)]
pub struct Row {
    /// The shipment.
    pub shipment: Shipment,
    /// Its alerts.
    pub alerts: Vec<Alert>,
    /// Viability window remaining, ms (none for a product without one).
    pub remaining_ms: Option<i64>,
    /// Nominal window, ms.
    pub nominal_ms: Option<i64>,
    /// The status document (`evaluate::status_json`).
    pub status: serde_json::Value,
}

/// How much a shipment needs a person, smallest first: unacknowledged
/// critical, unacknowledged warning, acknowledged but open, the rest;
/// closed shipments last; within a rank the least window left first.
pub fn risk(state: ShipState, alerts: &[Alert], remaining_ms: Option<i64>) -> (u8, i64) {
    let open = |sev: Severity| {
        alerts
            .iter()
            .any(|a| a.state == AlertState::Open && a.severity == sev)
    };
    let rank = if state == ShipState::Closed {
        4
    } else if open(Severity::Critical) {
        0
    } else if open(Severity::Warning) {
        1
    } else if alerts.iter().any(|a| a.is_open()) {
        2
    } else {
        3
    };
    (rank, remaining_ms.unwrap_or(i64::MAX))
}

/// Sorts rows by [`risk`], then by id.
pub fn sort_by_risk(rows: &mut [Row]) {
    rows.sort_by(|a, b| {
        let ka = risk(a.shipment.state, &a.alerts, a.remaining_ms);
        let kb = risk(b.shipment.state, &b.alerts, b.remaining_ms);
        ka.cmp(&kb)
            .then_with(|| a.shipment.id.cmp(&b.shipment.id))
            .then(Ordering::Equal)
    });
}

/// The rows of the list, from the summaries every evaluation keeps up to
/// date (the page is polled by every open browser: it never re-evaluates).
fn load_rows(s: &AppState) -> anyhow::Result<Vec<Row>> {
    let mut rows: Vec<Row> = s
        .reader
        .summary_rows(crate::ingest::now_ms())?
        .into_iter()
        .map(|x| Row {
            shipment: x.shipment,
            alerts: x.alerts,
            remaining_ms: x.remaining_ms,
            nominal_ms: x.nominal_ms,
            status: x.status,
        })
        .collect();
    sort_by_risk(&mut rows);
    Ok(rows)
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

fn state_name(s: ShipState) -> &'static str {
    match s {
        ShipState::Planned => "planned",
        ShipState::InTransit => "in transit",
        ShipState::Arrived => "arrived",
        ShipState::Closed => "closed",
    }
}

/// The list of shipments (the part the page refreshes).
pub fn list_html(rows: &[Row]) -> String {
    let mut s = String::new();
    if rows.is_empty() {
        s.push_str("<p class=\"empty\">No shipments yet. Create one with <code>coldchain shipment create</code> or POST /api/v1/shipments.</p>");
        return s;
    }
    s.push_str("<table class=\"list\"><thead><tr><th>Shipment</th><th>Lane</th><th>State</th><th>Last</th><th>Min / max</th><th>Window left</th><th>Alerts</th></tr></thead><tbody>\n");
    for r in rows {
        let sh = &r.shipment;
        let (rank, _) = risk(sh.state, &r.alerts, r.remaining_ms);
        let class = match rank {
            0 => "risk-critical",
            1 => "risk-warning",
            2 => "risk-acked",
            4 => "risk-closed",
            _ => "risk-ok",
        };
        let last = r.status["last"]["milli_c"]
            .as_i64()
            .map(|m| fmt_c(m as i32))
            .unwrap_or_else(|| "—".into());
        let mm = match (
            r.status["min_milli_c"].as_i64(),
            r.status["max_milli_c"].as_i64(),
        ) {
            (Some(a), Some(b)) => format!("{} / {}", fmt_c(a as i32), fmt_c(b as i32)),
            _ => "—".into(),
        };
        let window = match (r.remaining_ms, r.nominal_ms) {
            (Some(rem), Some(nom)) if nom > 0 => format!(
                "<meter min=\"0\" max=\"{nom}\" low=\"{}\" optimum=\"{nom}\" value=\"{rem}\"></meter> {}",
                nom / 4,
                fmt_dur(rem)
            ),
            // A dry shipper warming towards its limit: the predicted crossing.
            _ => match r.status["hold_time"]["sentence"].as_str() {
                Some(h) => format!(
                    "<span class=\"hold{}\">{}</span>",
                    if r.status["hold_time"]["warning"] == true {
                        " warning"
                    } else {
                        ""
                    },
                    esc(h)
                ),
                None => "<span class=\"muted\">n/a</span>".into(),
            },
        };
        let open: Vec<&Alert> = r.alerts.iter().filter(|a| a.is_open()).collect();
        let unack = open.iter().filter(|a| a.state == AlertState::Open).count();
        let alerts = if open.is_empty() {
            "<span class=\"badge ok\">none open</span>".to_string()
        } else {
            let worst = open
                .iter()
                .map(|a| a.severity)
                .max()
                .unwrap_or(Severity::Info);
            format!(
                "<span class=\"badge {}\">{} open</span>{}",
                severity_name(worst),
                open.len(),
                if unack > 0 {
                    format!(" <span class=\"badge unack\">{unack} unacknowledged</span>")
                } else {
                    String::new()
                }
            )
        };
        let _ = writeln!(
            s,
            "<tr class=\"{class}\" data-shipment=\"{}\"><td data-label=\"Shipment\"><a href=\"/shipments/{}\">{}</a><div class=\"muted\">{}</div></td><td data-label=\"Lane\">{}</td><td data-label=\"State\">{}</td><td data-label=\"Last\">{last}</td><td data-label=\"Min / max\">{mm}</td><td data-label=\"Window left\">{window}</td><td data-label=\"Alerts\">{alerts}</td></tr>",
            esc(&sh.id),
            url_segment(&sh.id),
            esc(&sh.id),
            esc(&sh.product),
            esc(&sh.profile),
            state_name(sh.state),
        );
    }
    s.push_str("</tbody></table>\n");
    s
}

/// Who is looking at a page: their name and role, and their session's CSRF token.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    /// The signed-in person (none: anonymous reads on loopback).
    pub actor: Option<Actor>,
    /// The session's CSRF token.
    pub csrf: Option<String>,
}

impl Viewer {
    fn from(actor: Option<Extension<Actor>>, csrf: Option<Extension<super::auth::Csrf>>) -> Viewer {
        Viewer {
            actor: actor.map(|Extension(a)| a),
            csrf: csrf.map(|Extension(c)| c.0),
        }
    }

    /// The role, if signed in.
    pub fn role(&self) -> Option<Role> {
        self.actor.as_ref().map(|a| a.role)
    }

    fn may(&self, p: Perm) -> bool {
        self.role().is_some_and(|r| r.may(p))
    }
}

fn page(title: &str, src: &str, body: &str, v: &Viewer) -> String {
    let account = match &v.actor {
        Some(a) => format!(
            "<span class=\"who\" id=\"who\" data-user=\"{}\" data-role=\"{}\">{} · {}</span><button type=\"button\" id=\"logout\" class=\"link\">Log out</button>",
            esc(&a.user),
            a.role.name(),
            esc(&a.full_name),
            a.role.name()
        ),
        None => "<a id=\"login-link\" href=\"/login\">Log in</a>".into(),
    };
    let csrf = v
        .csrf
        .as_deref()
        .map(|t| format!("<meta name=\"csrf-token\" content=\"{}\">\n", esc(t)))
        .unwrap_or_default();
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{csrf}<title>{} · Coldchain</title>
<link rel="stylesheet" href="/assets/dashboard.css">
<script src="/assets/dashboard.js" defer></script>
</head>
<body>
<header class="top"><a class="brand" href="/">Coldchain</a><span id="live-status" class="muted" aria-live="polite"></span><span class="account">{account}</span></header>
<main id="live" data-src="{}" data-poll-s="{POLL_S}" data-locked="{}">
{body}
</main>
<dialog id="act-dialog">
<form id="act-form" method="dialog">
<h2 id="act-title">Acknowledge alert</h2>
<p id="act-what" class="what"></p>
<label id="act-decision-label">Decision <select id="act-decision"><option value="accepted">released for use</option><option value="quarantined">quarantined</option><option value="rejected">rejected</option></select></label>
<label><span id="act-comment-label">What was done</span> <textarea name="comment" id="act-comment" required rows="3"></textarea></label>
<p id="act-sha" class="muted"></p>
<label id="act-password-label">Your password (signing asks for it again) <input id="act-password" type="password" autocomplete="current-password"></label>
<p id="act-error" class="error" role="alert"></p>
<div class="buttons"><button type="button" id="act-cancel">Cancel</button><button type="submit" id="act-submit" class="primary">Acknowledge</button></div>
</form>
</dialog>
</body>
</html>
"#,
        esc(title),
        esc(src),
        u8::from(body == LOCKED),
    )
}

/// The body of a page requested without the session its data needs.
const LOCKED: &str = r#"<section class="locked"><h1>Sign in needed</h1>
<p>This daemon shows its data only to people who are signed in.</p>
<p><a class="primary" id="to-login" href="/login">Log in</a></p></section>"#;

/// The login page.
async fn login_page(v_actor: Option<Extension<Actor>>) -> Response {
    let who = v_actor
        .map(|Extension(a)| {
            format!(
                "<p class=\"muted\">Signed in as {} ({}).</p>",
                esc(&a.full_name),
                a.role.name()
            )
        })
        .unwrap_or_default();
    html(
        StatusCode::OK,
        page(
            "Log in",
            "",
            &format!(
                r#"<section class="locked"><h1>Log in</h1>{who}
<form id="login-form"><label>User name <input id="login-name" autocomplete="username" required autocapitalize="none"></label>
<label>Password <input id="login-password" type="password" autocomplete="current-password" required></label>
<button type="submit" id="login-submit" class="primary">Log in</button><p id="login-error" class="error" role="alert"></p></form>
<form id="newpw-form" hidden><p>An admin reset your password: choose a new one (at least 12 characters).</p>
<label>New password <input id="newpw" type="password" autocomplete="new-password" required minlength="12"></label>
<button type="submit" id="newpw-submit" class="primary">Set password</button><p id="newpw-error" class="error" role="alert"></p></form></section>"#
            ),
            &Viewer::default(),
        ),
    )
}

async fn list_page(
    State(s): State<AppState>,
    Extension(PageAccess(granted)): Extension<PageAccess>,
    actor: Option<Extension<Actor>>,
    csrf: Option<Extension<super::auth::Csrf>>,
) -> Response {
    let v = Viewer::from(actor, csrf);
    if !granted {
        return html(StatusCode::OK, page("Shipments", "/ui/list", LOCKED, &v));
    }
    match tokio::task::spawn_blocking(move || load_rows(&s)).await {
        Ok(Ok(rows)) => html(
            StatusCode::OK,
            page(
                "Shipments",
                "/ui/list",
                &format!(
                    "<h1>Shipments</h1>\n<div id=\"list\">{}</div>",
                    list_html(&rows)
                ),
                &v,
            ),
        ),
        Ok(Err(e)) => html(StatusCode::INTERNAL_SERVER_ERROR, esc(&format!("{e:#}"))),
        Err(e) => html(StatusCode::INTERNAL_SERVER_ERROR, esc(&e.to_string())),
    }
}

async fn list_fragment(State(s): State<AppState>) -> Response {
    match tokio::task::spawn_blocking(move || load_rows(&s)).await {
        Ok(Ok(rows)) => html(
            StatusCode::OK,
            format!(
                "<h1>Shipments</h1>\n<div id=\"list\">{}</div>",
                list_html(&rows)
            ),
        ),
        Ok(Err(e)) => html(StatusCode::INTERNAL_SERVER_ERROR, esc(&format!("{e:#}"))),
        Err(e) => html(StatusCode::INTERNAL_SERVER_ERROR, esc(&e.to_string())),
    }
}

/// The viability gauge: a half circle filled by the share of the window left.
fn gauge(d: &ReportData) -> String {
    let Some(w) = &d.viability.window else {
        let mut s = String::from(
            "<div class=\"gauge none\"><p>No viability window: a cryopreserved product while it stays cold.</p>",
        );
        if let Some(wm) = &d.viability.warming {
            let _ = write!(
                s,
                "<p>Warming events ({} °C): <strong>{}</strong>, {} above.</p>",
                esc(&wm.limit),
                wm.events,
                fmt_dur(wm.time_above_ms)
            );
        }
        if let Some(h) = &d.viability.hold_time {
            let _ = write!(
                s,
                "<p class=\"hold{}\">Hold time at ETA: <strong>{}</strong></p>",
                if h.warning { " warning" } else { "" },
                esc(&h.sentence())
            );
            for p in &d.identity.probes {
                let _ = write!(
                    s,
                    "<p><a href=\"/devices/{}\">Warming history of {}</a></p>",
                    url_segment(&p.device),
                    esc(&p.device)
                );
            }
        }
        s.push_str("</div>");
        return s;
    };
    let frac = if w.nominal_ms > 0 {
        (w.remaining_ms as f64 / w.nominal_ms as f64).clamp(0.0, 1.0)
    } else {
        0.0
    };
    // Arc from 180° (left) to 0° (right), radius 80, centre (100, 100).
    let a = std::f64::consts::PI * (1.0 - frac);
    let (x, y) = (100.0 + 80.0 * a.cos(), 100.0 - 80.0 * a.sin());
    let colour = if frac < 0.1 {
        "#c0392b"
    } else if frac < 0.25 {
        "#d68910"
    } else {
        "#1e8449"
    };
    let arc = if frac > 0.0 {
        format!(
            "<path d=\"M20 100 A80 80 0 0 1 {x:.1} {y:.1}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"18\"/>"
        )
    } else {
        String::new()
    };
    let eta = w
        .predicted_at_eta_ms
        .map(|p| {
            if p >= 0 {
                format!("<p>Predicted at ETA: {} left.</p>", fmt_dur(p))
            } else {
                format!(
                    "<p class=\"bad\">Predicted to run out {} before ETA.</p>",
                    fmt_dur(-p)
                )
            }
        })
        .unwrap_or_default();
    format!(
        "<div class=\"gauge\" data-remaining-ms=\"{}\"><svg viewBox=\"0 0 200 120\" role=\"img\" aria-label=\"viability window remaining {}\"><path d=\"M20 100 A80 80 0 0 1 180 100\" fill=\"none\" stroke=\"#e5e8eb\" stroke-width=\"18\"/>{arc}<text x=\"100\" y=\"92\" text-anchor=\"middle\" font-size=\"22\" font-weight=\"bold\" fill=\"#1b1f24\">{:.0} %</text><text x=\"100\" y=\"114\" text-anchor=\"middle\" font-size=\"12\" fill=\"#5b6470\">of the window left</text></svg><p><strong>{}</strong> left of {}.</p>{eta}</div>",
        w.remaining_ms,
        fmt_dur(w.remaining_ms),
        frac * 100.0,
        fmt_dur(w.remaining_ms),
        fmt_dur(w.nominal_ms),
    )
}

/// The shipment's live content (the part the page refreshes).
pub fn shipment_html(d: &ReportData, v: &Viewer) -> String {
    let id = &d.identity;
    let t = &d.temperature;
    let mut s = String::new();
    let _ = write!(
        s,
        "<nav class=\"crumbs\"><a href=\"/\">← all shipments</a></nav><h1>{}</h1><p class=\"sub\">{} · {} → {} · lane <strong>{}</strong> · {}</p>",
        esc(&id.shipment),
        esc(&id.product),
        esc(&id.origin),
        esc(&id.destination),
        esc(&id.profile),
        esc(&d.journey.state.replace('_', " ")),
    );
    s.push_str("<ul class=\"facts\">");
    for f in &d.facts {
        let _ = write!(s, "<li>{}</li>", esc(f));
    }
    s.push_str("</ul>");
    let _ = write!(
        s,
        "<div class=\"grid\"><section class=\"card chart-card\"><h2>Temperature</h2>{}<p class=\"muted\">min {} · max {} · mean {}{}</p></section><section class=\"card\"><h2>Viability window</h2>{}</section></div>",
        report::chart_svg(d),
        t.min_milli_c.map(fmt_c).unwrap_or_else(|| "—".into()),
        t.max_milli_c.map(fmt_c).unwrap_or_else(|| "—".into()),
        t.mean_milli_c.map(fmt_c).unwrap_or_else(|| "—".into()),
        t.mkt
            .as_ref()
            .map(|m| format!(" · MKT {}", fmt_c(m.whole_milli_c)))
            .unwrap_or_default(),
        gauge(d),
    );

    s.push_str("<section class=\"card\"><h2>Alerts</h2>");
    if d.alerts.is_empty() {
        s.push_str("<p class=\"muted\">No alert.</p>");
    } else {
        s.push_str("<ol class=\"timeline\">");
        let mut alerts: Vec<_> = d.alerts.iter().collect();
        alerts.sort_by_key(|a| (a.fires_ms, a.id));
        for a in alerts {
            let ack = match (&a.ack_by, &a.ack_comment, a.ack_ms) {
                (Some(by), c, Some(at)) => format!(
                    "<p class=\"ack-info\">Acknowledged by <strong>{}</strong> at {}: “{}”</p>",
                    esc(by),
                    utc(at),
                    esc(c.as_deref().unwrap_or(""))
                ),
                _ => String::new(),
            };
            let mut button = String::new();
            if a.state == "open" && v.may(Perm::Ack) {
                let _ = write!(
                    button,
                    "<button type=\"button\" class=\"ack act primary\" data-action=\"ack\" data-alert=\"{}\" data-what=\"{}\">Acknowledge</button>",
                    a.id,
                    esc(&a.message)
                );
            }
            let assessed = match &a.assessment {
                Some(x) => format!(
                    "<p class=\"assess-info\">QA assessment by <strong>{}</strong> ({}) at {}: “{}”</p>",
                    esc(&x.full_name),
                    esc(&x.user),
                    utc(x.at_ms),
                    esc(&x.comment)
                ),
                None => String::new(),
            };
            if a.assessment.is_none() && a.withdrawn.is_none() && v.may(Perm::Assess) {
                let _ = write!(
                    button,
                    " <button type=\"button\" class=\"assess act\" data-action=\"assess\" data-alert=\"{}\" data-what=\"{}\">Assess</button>",
                    a.id,
                    esc(&a.message)
                );
            }
            let ack = format!("{ack}{assessed}");
            let _ = write!(
                s,
                "<li class=\"alert sev-{} state-{}\" data-alert=\"{}\" data-state=\"{}\"><div class=\"when\">{}</div><div class=\"body\"><span class=\"badge {}\">{}</span> <span class=\"badge state\">{}</span> {}{}{}{}</div></li>",
                esc(&a.severity),
                esc(&a.state),
                a.id,
                esc(&a.state),
                utc(a.fires_ms),
                esc(&a.severity),
                esc(&a.severity),
                esc(&a.state),
                esc(&a.message),
                crate::report::history_html(a).into_string(),
                ack,
                button
            );
        }
        s.push_str("</ol>");
    }
    s.push_str("</section>");
    let seg = url_segment(&id.shipment);
    let _ = write!(
        s,
        "{}<section class=\"card\"><h2>Arrival report</h2><p><a href=\"/api/v1/shipments/{seg}/report?format=html\" target=\"_blank\" rel=\"noopener\">HTML (prints on A4)</a> · <a href=\"/api/v1/shipments/{seg}/report?format=csv\">CSV</a> · <a href=\"/api/v1/shipments/{seg}/report?format=json\" target=\"_blank\" rel=\"noopener\">JSON</a></p><p class=\"muted\">As of {}. SHA-256 of this data: <code class=\"sha\">{}</code></p></section>",
        disposition_html(d, v),
        utc(d.as_of_ms),
        report::sha256(d),
    );
    s
}

/// The disposition: its signature, or (for QA, once arrived) the button
/// that signs it.
fn disposition_html(d: &ReportData, v: &Viewer) -> String {
    let mut s = String::from("<section class=\"card\" id=\"disposition\"><h2>Disposition</h2>");
    match &d.disposition {
        Some(x) => {
            let _ = write!(
                s,
                "<p><strong>{}</strong>: “{}”</p>",
                esc(&x.decision),
                esc(&x.comment)
            );
            match &x.signature {
                Some(g) => {
                    let _ = write!(
                        s,
                        "<p class=\"signature\">Electronically signed by <strong>{}</strong> ({}) at {}; meaning: <strong>{}</strong>; covers report SHA-256 <code class=\"signed-sha\">{}</code></p>",
                        esc(&g.full_name),
                        esc(&g.user),
                        utc(g.signed_ms),
                        esc(&g.meaning),
                        esc(&g.report_sha256)
                    );
                }
                None => s.push_str(
                    "<p class=\"muted\">Recorded before electronic signatures (not signed).</p>",
                ),
            }
        }
        None if d.journey.state == "arrived" && v.may(Perm::Sign) => {
            let _ = write!(
                s,
                "<p><button type=\"button\" class=\"sign act primary\" data-action=\"sign\" data-shipment=\"{}\" data-sha=\"{}\" data-what=\"{}\">Sign disposition</button></p>",
                esc(&d.identity.shipment),
                report::content_sha256(d),
                esc(&d.identity.shipment)
            );
        }
        None => s.push_str("<p class=\"muted\">Not recorded.</p>"),
    }
    s.push_str("</section>");
    s
}

fn load_report(s: &AppState, id: &str) -> anyhow::Result<Option<ReportData>> {
    report::for_shipment(&s.reader, &s.store, id, crate::ingest::now_ms())
}

async fn shipment_content(s: AppState, id: String, v: &Viewer) -> Result<String, Response> {
    let id2 = id.clone();
    match tokio::task::spawn_blocking(move || load_report(&s, &id2)).await {
        Ok(Ok(Some(d))) => Ok(shipment_html(&d, v)),
        Ok(Ok(None)) => Err(html(
            StatusCode::NOT_FOUND,
            page(
                "Not found",
                "",
                &format!(
                    "<nav class=\"crumbs\"><a href=\"/\">← all shipments</a></nav><h1>No shipment {}</h1>",
                    esc(&id)
                ),
                v,
            ),
        )),
        Ok(Err(e)) => Err(html(
            StatusCode::INTERNAL_SERVER_ERROR,
            esc(&format!("{e:#}")),
        )),
        Err(e) => Err(html(StatusCode::INTERNAL_SERVER_ERROR, esc(&e.to_string()))),
    }
}

async fn shipment_page(
    State(s): State<AppState>,
    Extension(PageAccess(granted)): Extension<PageAccess>,
    actor: Option<Extension<Actor>>,
    csrf: Option<Extension<super::auth::Csrf>>,
    Path(id): Path<String>,
) -> Response {
    let v = Viewer::from(actor, csrf);
    let src = format!("/ui/shipments/{}", url_segment(&id));
    if !granted {
        return html(StatusCode::OK, page(&id, &src, LOCKED, &v));
    }
    match shipment_content(s, id.clone(), &v).await {
        Ok(body) => html(StatusCode::OK, page(&id, &src, &body, &v)),
        Err(r) => r,
    }
}

async fn shipment_fragment(
    State(s): State<AppState>,
    actor: Option<Extension<Actor>>,
    Path(id): Path<String>,
) -> Response {
    let v = Viewer::from(actor, None);
    match shipment_content(s, id, &v).await {
        Ok(body) => html(StatusCode::OK, body),
        Err(r) => r,
    }
}

/// A dry shipper's warming rates across its shipments (the device's history).
fn device_html(v: &serde_json::Value) -> String {
    let id = v["device"].as_str().unwrap_or("");
    let mut s = format!(
        "<nav class=\"crumbs\"><a href=\"/\">← all shipments</a></nav><h1>Device {}</h1><h2>Warming rates of its dry-shipper shipments</h2><p class=\"muted\">Flagged when faster than {} times the mean of its first {} shipments.</p>",
        esc(id),
        v["factor"],
        v["baseline_shipments"]
    );
    let rows = v["shipments"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        s.push_str("<p class=\"empty\">No cryogenic shipment with a warming trend.</p>");
        return s;
    }
    s.push_str("<table class=\"list\"><thead><tr><th>Shipment</th><th>Warming from</th><th>Rate</th><th></th></tr></thead><tbody>");
    for r in rows {
        let sh = r["shipment"].as_str().unwrap_or("");
        let flagged = r["flagged"] == true;
        let _ = write!(
            s,
            "<tr class=\"{}\"><td><a href=\"/shipments/{}\">{}</a></td><td>{}</td><td>{:.2} °C/h</td><td>{}</td></tr>",
            if flagged { "risk-warning" } else { "risk-ok" },
            url_segment(sh),
            esc(sh),
            report::text::utc(r["from_ms"].as_i64().unwrap_or(0)),
            r["rate_mc_per_h"].as_i64().unwrap_or(0) as f64 / 1000.0,
            if flagged {
                "<span class=\"badge warning\">faster than its first shipments</span>"
            } else {
                ""
            }
        );
    }
    s.push_str("</tbody></table>");
    s
}

async fn device_content(s: AppState, id: String) -> Result<String, Response> {
    match tokio::task::spawn_blocking(move || crate::holdtime::history_json(&s.reader, &id)).await {
        Ok(Ok(v)) => Ok(device_html(&v)),
        Ok(Err(e)) => Err(html(
            StatusCode::INTERNAL_SERVER_ERROR,
            esc(&format!("{e:#}")),
        )),
        Err(e) => Err(html(StatusCode::INTERNAL_SERVER_ERROR, esc(&e.to_string()))),
    }
}

async fn device_page(
    State(s): State<AppState>,
    Extension(PageAccess(granted)): Extension<PageAccess>,
    actor: Option<Extension<Actor>>,
    csrf: Option<Extension<super::auth::Csrf>>,
    Path(id): Path<String>,
) -> Response {
    let v = Viewer::from(actor, csrf);
    let src = format!("/ui/devices/{}", url_segment(&id));
    if !granted {
        return html(StatusCode::OK, page(&id, &src, LOCKED, &v));
    }
    match device_content(s, id.clone()).await {
        Ok(body) => html(StatusCode::OK, page(&id, &src, &body, &v)),
        Err(r) => r,
    }
}

async fn device_fragment(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    match device_content(s, id).await {
        Ok(body) => html(StatusCode::OK, body),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::{ConditionId, ConditionKind};

    fn alert(sev: Severity, state: AlertState) -> Alert {
        Alert {
            id: 1,
            shipment: "x".into(),
            condition: ConditionId {
                kind: ConditionKind::Silent,
                start_ms: 0,
            },
            severity: sev,
            message: "m".into(),
            state,
            raised_ms: 0,
            fires_ms: 0,
            cleared_ms: None,
            peak: None,
            beyond_ms: 0,
            ack: None,
            resolved_ms: None,
            escalations: 0,
            escalated_ms: None,
            last_ms: 0,
            revisions: Vec::new(),
            withdrawn: None,
        }
    }

    #[test]
    fn risk_order() {
        use AlertState::*;
        use Severity::*;
        let t = ShipState::InTransit;
        let crit = risk(t, &[alert(Critical, Open)], Some(50));
        let warn = risk(
            t,
            &[alert(Warning, Open), alert(Critical, Acknowledged)],
            Some(1),
        );
        let acked = risk(t, &[alert(Critical, Acknowledged)], Some(1));
        let little = risk(t, &[alert(Warning, Resolved)], Some(10));
        let lots = risk(t, &[], Some(1000));
        let none = risk(t, &[], None);
        let closed = risk(ShipState::Closed, &[alert(Critical, Open)], Some(0));
        let mut v = vec![none, closed, lots, little, acked, warn, crit];
        v.sort();
        assert_eq!(v, vec![crit, warn, acked, little, lots, none, closed]);
    }
}
