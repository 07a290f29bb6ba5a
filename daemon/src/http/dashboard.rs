//! The live dashboard, served by the daemon: server-rendered HTML with a
//! little vanilla JavaScript (no build step; the assets are compiled in).
//!
//! * `/`: the shipments, sorted by risk ([`risk`]): unacknowledged critical
//!   alerts first, then unacknowledged warnings, then acknowledged but open
//!   alerts, then the least viability window left; closed shipments last.
//!   Each row names the sites (gateways, `direct`, `serial`) its data came
//!   through; `/?site=gw-a` lists only those seen through `gw-a` (a select
//!   of every site seen, kept in the address and in the polled fragment's).
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
//! The pages are maud templates: all user text (shipment ids, products,
//! comments) is escaped by maud on the server (only the report's chart, SVG
//! with its own text escaped, goes in as it is);
//! the script inserts only server-rendered fragments and sets dialog text with
//! `textContent`. Pages carry a Content-Security-Policy that allows no inline
//! script and nothing from other origins.

use std::cmp::Ordering;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use super::state::{AppState, PageAccess};
use crate::alert::{Alert, AlertState};
use crate::profile::Severity;
use maud::{Markup, PreEscaped};

use crate::report::text::{fmt_c, fmt_dur, url_segment, utc};
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

fn html(status: StatusCode, body: Markup) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body.into_string(),
    )
        .into_response()
}

/// An error as a page's content (escaped like everything else).
fn error_html(status: StatusCode, e: impl std::fmt::Display) -> Response {
    html(status, maud::html! { (format!("{e:#}")) })
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
    /// The paths (gateways, `direct`, `serial`) its devices' frames came
    /// through during the journey ([`crate::sites::Paths::seen_through`]).
    pub seen_through: Vec<String>,
}

/// The list's filter, kept in the query string (`/?site=gw-a`): only
/// shipments seen through that site, as `GET /api/v1/shipments?site=`.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct ListQuery {
    /// A gateway id, `direct` or `serial`; empty or absent: every site.
    pub site: Option<String>,
}

impl ListQuery {
    fn site(&self) -> Option<&str> {
        self.site.as_deref().filter(|x| !x.is_empty())
    }

    /// The fragment the page polls, with the same filter.
    fn src(&self) -> String {
        match self.site() {
            Some(x) => format!("/ui/list?site={}", url_segment(x)),
            None => "/ui/list".into(),
        }
    }
}

/// The rows a list shows, and every site seen across all shipments (what
/// the filter offers).
#[derive(Debug)]
pub struct List {
    /// The rows that pass the filter, by risk.
    pub rows: Vec<Row>,
    /// Every site of every shipment, sorted.
    pub sites: Vec<String>,
    /// The site filtered on, if any.
    pub site: Option<String>,
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
/// date (the page is polled by every open browser: it never re-evaluates),
/// with the sites each was seen through, filtered by `q`.
fn load_rows(s: &AppState, q: &ListQuery) -> anyhow::Result<List> {
    let now = crate::ingest::now_ms();
    let paths = crate::sites::Paths::open(s.store.db())?;
    let site = q.site().map(str::to_string);
    let mut sites = std::collections::BTreeSet::new();
    let mut rows = Vec::new();
    for x in s.reader.summary_rows(now)? {
        let seen_through = paths.seen_through(&x.shipment, now)?;
        sites.extend(seen_through.iter().cloned());
        if site.as_ref().is_some_and(|f| !seen_through.contains(f)) {
            continue;
        }
        rows.push(Row {
            shipment: x.shipment,
            alerts: x.alerts,
            remaining_ms: x.remaining_ms,
            nominal_ms: x.nominal_ms,
            status: x.status,
            seen_through,
        });
    }
    sort_by_risk(&mut rows);
    // The site asked for stays selectable even when nothing matches now.
    sites.extend(site.clone());
    Ok(List {
        rows,
        sites: sites.into_iter().collect(),
        site,
    })
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
pub fn list_html(rows: &[Row]) -> Markup {
    if rows.is_empty() {
        return maud::html! {
            p class="empty" { "No shipments yet. Create one with " code { "coldchain shipment create" } " or POST /api/v1/shipments." }
        };
    }
    maud::html! {
        table class="list" {
            thead { tr {
                th { "Shipment" } th { "Lane" } th { "Sites" } th { "State" } th { "Last" } th { "Min / max" } th { "Window left" } th { "Alerts" }
            } }
            tbody {
                "\n"
                @for r in rows { (list_row(r)) "\n" }
            }
        }
        "\n"
    }
}

fn list_row(r: &Row) -> Markup {
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
    let open: Vec<&Alert> = r.alerts.iter().filter(|a| a.is_open()).collect();
    let unack = open.iter().filter(|a| a.state == AlertState::Open).count();
    let worst = open
        .iter()
        .map(|a| a.severity)
        .max()
        .unwrap_or(Severity::Info);
    maud::html! {
        tr class=(class) data-shipment=(sh.id) {
            td data-label="Shipment" {
                a href={ "/shipments/" (url_segment(&sh.id)) } { (sh.id) }
                div class="muted" { (sh.product) }
            }
            td data-label="Lane" { (sh.profile) }
            td data-label="Sites" class="sites" data-sites=(r.seen_through.join(" ")) {
                @if r.seen_through.is_empty() { "—" }
                @for (i, x) in r.seen_through.iter().enumerate() {
                    @if i > 0 { ", " }
                    span class="site" { (x) }
                }
            }
            td data-label="State" { (state_name(sh.state)) }
            td data-label="Last" { (last) }
            td data-label="Min / max" { (mm) }
            td data-label="Window left" {
                @match (r.remaining_ms, r.nominal_ms) {
                    (Some(rem), Some(nom)) if nom > 0 => {
                        meter min="0" max=(nom) low=(nom / 4) optimum=(nom) value=(rem) {}
                        " " (fmt_dur(rem))
                    }
                    // A dry shipper warming towards its limit: the predicted crossing.
                    _ => {
                        @match r.status["hold_time"]["sentence"].as_str() {
                            Some(h) => {
                                span class={ "hold" @if r.status["hold_time"]["warning"] == true { " warning" } } { (h) }
                            }
                            None => { span class="muted" { "n/a" } }
                        }
                    }
                }
            }
            td data-label="Alerts" {
                @if open.is_empty() {
                    span class="badge ok" { "none open" }
                } @else {
                    span class={ "badge " (severity_name(worst)) } { (open.len()) " open" }
                    @if unack > 0 {
                        " " span class="badge unack" { (unack) " unacknowledged" }
                    }
                }
            }
        }
    }
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

fn page(title: &str, src: &str, body: Markup, locked: bool, v: &Viewer) -> Markup {
    maud::html! {
        (maud::DOCTYPE) "\n"
        html lang="en" {
            "\n"
            head {
                "\n" meta charset="utf-8";
                "\n" meta name="viewport" content="width=device-width, initial-scale=1";
                "\n"
                @if let Some(t) = &v.csrf { meta name="csrf-token" content=(t); "\n" }
                title { (title) " · Coldchain" }
                "\n" link rel="stylesheet" href="/assets/dashboard.css";
                "\n" script src="/assets/dashboard.js" defer {}
                "\n"
            }
            "\n"
            body {
                "\n"
                header class="top" {
                    a class="brand" href="/" { "Coldchain" }
                    span id="live-status" class="muted" aria-live="polite" {}
                    span class="account" {
                        @match &v.actor {
                            Some(a) => {
                                span class="who" id="who" data-user=(a.user) data-role=(a.role.name()) { (a.full_name) " · " (a.role.name()) }
                                button type="button" id="logout" class="link" { "Log out" }
                            }
                            None => { a id="login-link" href="/login" { "Log in" } }
                        }
                    }
                }
                "\n"
                main id="live" data-src=(src) data-poll-s=(POLL_S) data-locked=(u8::from(locked)) {
                    "\n" (body) "\n"
                }
                "\n"
                (act_dialog())
                "\n"
            }
            "\n"
        }
        "\n"
    }
}

/// The dialog that acknowledges, assesses and signs (the script fills it in).
fn act_dialog() -> Markup {
    maud::html! {
        dialog id="act-dialog" {
            "\n"
            form id="act-form" method="dialog" {
                "\n" h2 id="act-title" { "Acknowledge alert" }
                "\n" p id="act-what" class="what" {}
                "\n" label id="act-decision-label" {
                    "Decision "
                    select id="act-decision" {
                        option value="accepted" { "released for use" }
                        option value="quarantined" { "quarantined" }
                        option value="rejected" { "rejected" }
                    }
                }
                "\n" label {
                    span id="act-comment-label" { "What was done" } " "
                    textarea name="comment" id="act-comment" required rows="3" {}
                }
                "\n" p id="act-sha" class="muted" {}
                "\n" label id="act-password-label" {
                    "Your password (signing asks for it again) "
                    input id="act-password" type="password" autocomplete="current-password";
                }
                "\n" p id="act-error" class="error" role="alert" {}
                "\n" div class="buttons" {
                    button type="button" id="act-cancel" { "Cancel" }
                    button type="submit" id="act-submit" class="primary" { "Acknowledge" }
                }
                "\n"
            }
            "\n"
        }
    }
}

/// The body of a page requested without the session its data needs.
fn locked() -> Markup {
    maud::html! {
        section class="locked" {
            h1 { "Sign in needed" }
            "\n" p { "This daemon shows its data only to people who are signed in." }
            "\n" p { a class="primary" id="to-login" href="/login" { "Log in" } }
        }
    }
}

/// The login page.
async fn login_page(v_actor: Option<Extension<Actor>>) -> Response {
    let body = maud::html! {
        section class="locked" {
            h1 { "Log in" }
            @if let Some(Extension(a)) = &v_actor {
                p class="muted" { "Signed in as " (a.full_name) " (" (a.role.name()) ")." }
            }
            "\n"
            form id="login-form" {
                label { "User name " input id="login-name" autocomplete="username" required autocapitalize="none"; }
                "\n"
                label { "Password " input id="login-password" type="password" autocomplete="current-password" required; }
                "\n"
                button type="submit" id="login-submit" class="primary" { "Log in" }
                p id="login-error" class="error" role="alert" {}
            }
            "\n"
            form id="newpw-form" hidden {
                p { "An admin reset your password: choose a new one (at least 12 characters)." }
                "\n"
                label { "New password " input id="newpw" type="password" autocomplete="new-password" required minlength="12"; }
                "\n"
                button type="submit" id="newpw-submit" class="primary" { "Set password" }
                p id="newpw-error" class="error" role="alert" {}
            }
        }
    };
    html(
        StatusCode::OK,
        page("Log in", "", body, false, &Viewer::default()),
    )
}

/// The filter by site: a GET form, so the choice is in the address
/// (`/?site=…`); the script submits it when the choice changes.
fn site_filter(l: &List) -> Markup {
    maud::html! {
        form id="site-filter" class="filters" method="get" action="/" {
            label for="site" { "Site" } " "
            select id="site" name="site" {
                option value="" selected[l.site.is_none()] { "All sites" }
                @for x in &l.sites {
                    option value=(x) selected[l.site.as_deref() == Some(x.as_str())] { (x) }
                }
            }
            " " button type="submit" { "Filter" }
        }
    }
}

fn list_body(l: &List) -> Markup {
    maud::html! {
        h1 { "Shipments" } "\n"
        @if !l.sites.is_empty() { (site_filter(l)) "\n" }
        div id="list" {
            @match (&l.site, l.rows.is_empty()) {
                (Some(x), true) => p class="empty" { "No shipment seen through " (x) "." },
                _ => (list_html(&l.rows)),
            }
        }
    }
}

async fn list_page(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
    Extension(PageAccess(granted)): Extension<PageAccess>,
    actor: Option<Extension<Actor>>,
    csrf: Option<Extension<super::auth::Csrf>>,
) -> Response {
    let v = Viewer::from(actor, csrf);
    if !granted {
        return html(
            StatusCode::OK,
            page("Shipments", "/ui/list", locked(), true, &v),
        );
    }
    let src = q.src();
    match tokio::task::spawn_blocking(move || load_rows(&s, &q)).await {
        Ok(Ok(l)) => html(
            StatusCode::OK,
            page("Shipments", &src, list_body(&l), false, &v),
        ),
        Ok(Err(e)) => error_html(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error_html(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn list_fragment(State(s): State<AppState>, Query(q): Query<ListQuery>) -> Response {
    match tokio::task::spawn_blocking(move || load_rows(&s, &q)).await {
        Ok(Ok(l)) => html(StatusCode::OK, list_body(&l)),
        Ok(Err(e)) => error_html(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error_html(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// The viability gauge: a half circle filled by the share of the window left.
fn gauge(d: &ReportData) -> Markup {
    let Some(w) = &d.viability.window else {
        return maud::html! {
            div class="gauge none" {
                p { "No viability window: a cryopreserved product while it stays cold." }
                @if let Some(wm) = &d.viability.warming {
                    p { "Warming events (" (wm.limit) " °C): " strong { (wm.events) } ", " (fmt_dur(wm.time_above_ms)) " above." }
                }
                @if let Some(h) = &d.viability.hold_time {
                    p class={ "hold" @if h.warning { " warning" } } { "Hold time at ETA: " strong { (h.sentence()) } }
                    @for p in &d.identity.probes {
                        p { a href={ "/devices/" (url_segment(&p.device)) } { "Warming history of " (p.device) } }
                    }
                }
            }
        };
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
    maud::html! {
        div class="gauge" data-remaining-ms=(w.remaining_ms) {
            svg viewBox="0 0 200 120" role="img" aria-label={ "viability window remaining " (fmt_dur(w.remaining_ms)) } {
                path d="M20 100 A80 80 0 0 1 180 100" fill="none" stroke="#e5e8eb" stroke-width="18" {}
                @if frac > 0.0 {
                    path d=(format!("M20 100 A80 80 0 0 1 {x:.1} {y:.1}")) fill="none" stroke=(colour) stroke-width="18" {}
                }
                text x="100" y="92" text-anchor="middle" font-size="22" font-weight="bold" fill="#1b1f24" { (format!("{:.0} %", frac * 100.0)) }
                text x="100" y="114" text-anchor="middle" font-size="12" fill="#5b6470" { "of the window left" }
            }
            p { strong { (fmt_dur(w.remaining_ms)) } " left of " (fmt_dur(w.nominal_ms)) "." }
            @if let Some(p) = w.predicted_at_eta_ms {
                @if p >= 0 {
                    p { "Predicted at ETA: " (fmt_dur(p)) " left." }
                } @else {
                    p class="bad" { "Predicted to run out " (fmt_dur(-p)) " before ETA." }
                }
            }
        }
    }
}

/// The shipment's live content (the part the page refreshes).
pub fn shipment_html(d: &ReportData, v: &Viewer) -> Markup {
    let id = &d.identity;
    let t = &d.temperature;
    let seg = url_segment(&id.shipment);
    let mut alerts: Vec<_> = d.alerts.iter().collect();
    alerts.sort_by_key(|a| (a.fires_ms, a.id));
    let opt = |m: Option<i32>| m.map(fmt_c).unwrap_or_else(|| "—".into());
    maud::html! {
        nav class="crumbs" { a href="/" { "← all shipments" } }
        h1 { (id.shipment) }
        p class="sub" {
            (id.product) " · " (id.origin) " → " (id.destination) " · lane " strong { (id.profile) }
            " · " (d.journey.state.replace('_', " "))
        }
        ul class="facts" { @for f in &d.facts { li { (f) } } }
        div class="grid" {
            section class="card chart-card" {
                h2 { "Temperature" }
                (PreEscaped(report::chart_svg(d)))
                p class="muted" {
                    "min " (opt(t.min_milli_c)) " · max " (opt(t.max_milli_c)) " · mean " (opt(t.mean_milli_c))
                    @if let Some(m) = &t.mkt { " · MKT " (fmt_c(m.whole_milli_c)) }
                }
            }
            section class="card" { h2 { "Viability window" } (gauge(d)) }
        }
        section class="card" {
            h2 { "Alerts" }
            @if d.alerts.is_empty() {
                p class="muted" { "No alert." }
            } @else {
                ol class="timeline" { @for a in &alerts { (alert_item(a, v)) } }
            }
        }
        (disposition_html(d, v))
        section class="card" {
            h2 { "Arrival report" }
            p {
                a href={ "/api/v1/shipments/" (seg) "/report?format=html" } target="_blank" rel="noopener" { "HTML (prints on A4)" }
                " · "
                a href={ "/api/v1/shipments/" (seg) "/report?format=csv" } { "CSV" }
                " · "
                a href={ "/api/v1/shipments/" (seg) "/report?format=json" } target="_blank" rel="noopener" { "JSON" }
                " · "
                a href={ "/api/v1/shipments/" (seg) "/report?format=pdf" } target="_blank" rel="noopener" { "PDF/A (for the lab's records)" }
            }
            p class="muted" { "As of " (utc(d.as_of_ms)) ". SHA-256 of this data: " code class="sha" { (report::sha256(d)) } }
        }
    }
}

/// One alert of the timeline, with the buttons the viewer's role may use.
fn alert_item(a: &report::AlertEntry, v: &Viewer) -> Markup {
    maud::html! {
        li class={ "alert sev-" (a.severity) " state-" (a.state) } data-alert=(a.id) data-state=(a.state) {
            div class="when" { (utc(a.fires_ms)) }
            div class="body" {
                span class={ "badge " (a.severity) } { (a.severity) } " "
                span class="badge state" { (a.state) } " "
                (a.message)
                (report::history_html(a))
                @if let (Some(by), c, Some(at)) = (&a.ack_by, &a.ack_comment, a.ack_ms) {
                    p class="ack-info" { "Acknowledged by " strong { (by) } " at " (utc(at)) ": “" (c.as_deref().unwrap_or("")) "”" }
                }
                @if let Some(x) = &a.assessment {
                    p class="assess-info" { "QA assessment by " strong { (x.full_name) } " (" (x.user) ") at " (utc(x.at_ms)) ": “" (x.comment) "”" }
                }
                @if a.state == "open" && v.may(Perm::Ack) {
                    button type="button" class="ack act primary" data-action="ack" data-alert=(a.id) data-what=(a.message) { "Acknowledge" }
                }
                @if a.assessment.is_none() && a.withdrawn.is_none() && v.may(Perm::Assess) {
                    " "
                    button type="button" class="assess act" data-action="assess" data-alert=(a.id) data-what=(a.message) { "Assess" }
                }
            }
        }
    }
}

/// The disposition: its signature, or (for QA, once arrived) the button
/// that signs it.
fn disposition_html(d: &ReportData, v: &Viewer) -> Markup {
    maud::html! {
        section class="card" id="disposition" {
            h2 { "Disposition" }
            @match &d.disposition {
                Some(x) => {
                    p { strong { (x.decision) } ": “" (x.comment) "”" }
                    @match &x.signature {
                        Some(g) => {
                            p class="signature" {
                                "Electronically signed by " strong { (g.full_name) } " (" (g.user) ") at " (utc(g.signed_ms))
                                "; meaning: " strong { (g.meaning) } "; covers report SHA-256 "
                                code class="signed-sha" { (g.report_sha256) }
                            }
                        }
                        None => { p class="muted" { "Recorded before electronic signatures (not signed)." } }
                    }
                }
                None if d.journey.state == "arrived" && v.may(Perm::Sign) => {
                    p {
                        button type="button" class="sign act primary" data-action="sign" data-shipment=(d.identity.shipment)
                            data-sha=(report::content_sha256(d)) data-what=(d.identity.shipment) { "Sign disposition" }
                    }
                }
                None => { p class="muted" { "Not recorded." } }
            }
        }
    }
}

fn load_report(s: &AppState, id: &str) -> anyhow::Result<Option<ReportData>> {
    report::for_shipment(&s.reader, &s.store, id, crate::ingest::now_ms())
}

async fn shipment_content(s: AppState, id: String, v: &Viewer) -> Result<Markup, Response> {
    let id2 = id.clone();
    match tokio::task::spawn_blocking(move || load_report(&s, &id2)).await {
        Ok(Ok(Some(d))) => Ok(shipment_html(&d, v)),
        Ok(Ok(None)) => {
            let body = maud::html! {
                nav class="crumbs" { a href="/" { "← all shipments" } }
                h1 { "No shipment " (id) }
            };
            Err(html(
                StatusCode::NOT_FOUND,
                page("Not found", "", body, false, v),
            ))
        }
        Ok(Err(e)) => Err(error_html(StatusCode::INTERNAL_SERVER_ERROR, e)),
        Err(e) => Err(error_html(StatusCode::INTERNAL_SERVER_ERROR, e)),
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
        return html(StatusCode::OK, page(&id, &src, locked(), true, &v));
    }
    match shipment_content(s, id.clone(), &v).await {
        Ok(body) => html(StatusCode::OK, page(&id, &src, body, false, &v)),
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
fn device_html(v: &serde_json::Value) -> Markup {
    let id = v["device"].as_str().unwrap_or("");
    let rows = v["shipments"].as_array().cloned().unwrap_or_default();
    maud::html! {
        nav class="crumbs" { a href="/" { "← all shipments" } }
        h1 { "Device " (id) }
        h2 { "Warming rates of its dry-shipper shipments" }
        p class="muted" {
            "Flagged when faster than " (v["factor"].to_string()) " times the mean of its first "
            (v["baseline_shipments"].to_string()) " shipments."
        }
        @if rows.is_empty() {
            p class="empty" { "No cryogenic shipment with a warming trend." }
        } @else {
            table class="list" {
                thead { tr { th { "Shipment" } th { "Warming from" } th { "Rate" } th {} } }
                tbody {
                    @for r in &rows {
                        @let sh = r["shipment"].as_str().unwrap_or("");
                        @let flagged = r["flagged"] == true;
                        tr class=(if flagged { "risk-warning" } else { "risk-ok" }) {
                            td { a href={ "/shipments/" (url_segment(sh)) } { (sh) } }
                            td { (utc(r["from_ms"].as_i64().unwrap_or(0))) }
                            td { (format!("{:.2}", r["rate_mc_per_h"].as_i64().unwrap_or(0) as f64 / 1000.0)) " °C/h" }
                            td {
                                @if flagged { span class="badge warning" { "faster than its first shipments" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn device_content(s: AppState, id: String) -> Result<Markup, Response> {
    match tokio::task::spawn_blocking(move || crate::holdtime::history_json(&s.reader, &id)).await {
        Ok(Ok(v)) => Ok(device_html(&v)),
        Ok(Err(e)) => Err(error_html(StatusCode::INTERNAL_SERVER_ERROR, e)),
        Err(e) => Err(error_html(StatusCode::INTERNAL_SERVER_ERROR, e)),
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
        return html(StatusCode::OK, page(&id, &src, locked(), true, &v));
    }
    match device_content(s, id.clone()).await {
        Ok(body) => html(StatusCode::OK, page(&id, &src, body, false, &v)),
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

    /// Text from people and devices reaches the page escaped, in content
    /// and in attributes, and the page says whether it is the locked shell.
    #[test]
    fn user_text_is_escaped() {
        let new: crate::shipment::NewShipment = serde_json::from_value(serde_json::json!({
            "id": "S\"<1>", "product": "<script>alert(1)</script>", "profile": "fridge",
            "watch": [{"device": "d", "channel": 0}], "origin": "a", "destination": "b",
        }))
        .unwrap();
        let shipment = Shipment::create(new, 0).unwrap();
        let row = Row {
            shipment,
            alerts: vec![alert(Severity::Critical, AlertState::Open)],
            remaining_ms: None,
            nominal_ms: None,
            status: serde_json::json!({"hold_time": {"sentence": "<i>soon</i>", "warning": true}}),
            seen_through: vec!["<b>gw</b>".into()],
        };
        let list = list_html(&[row]).into_string();
        assert!(
            !list.contains("<script>") && !list.contains("<i>"),
            "{list}"
        );
        assert!(
            list.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{list}"
        );
        assert!(
            list.contains(r#"data-shipment="S&quot;&lt;1&gt;""#),
            "{list}"
        );
        assert!(list.contains(r#"href="/shipments/S%22%3C1%3E""#), "{list}");
        assert!(list.contains("1 unacknowledged"), "{list}");
        assert!(list.contains("&lt;b&gt;gw&lt;/b&gt;"), "{list}");
        let v = Viewer::default();
        let page = page("<T>", "/ui/x\"", locked(), true, &v).into_string();
        assert!(
            page.contains("<title>&lt;T&gt; · Coldchain</title>"),
            "{page}"
        );
        assert!(
            page.contains(r#"data-src="/ui/x&quot;" data-poll-s="5" data-locked="1""#),
            "{page}"
        );
        assert!(page.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
    }
}
