//! Authentication and authority on the HTTP side: who is asking (a session
//! cookie, a personal API token or the legacy shared token), whether their
//! role may do what they ask (checked here, on the server, for every route),
//! cross-site request protection, and the routes for logging in, accounts
//! and tokens.
//!
//! # Cross-site requests
//!
//! The session cookie is `HttpOnly`, `SameSite=Strict` (and `Secure` on
//! TLS). Every change made with a session must also carry the session's
//! CSRF token in `X-CSRF-Token` (the page has it in a meta element), and is
//! refused when the browser says it comes from another site
//! (`Sec-Fetch-Site`) or another origin (`Origin` not this host). Bearer
//! tokens are not sent by browsers on their own, so they need none of this.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::state::{ApiError, AppState, JsonBody, PageAccess};
use crate::store::Store;
use crate::users::{Actor, AuthError, Perm, Role, UserInfo, Via};

pub use super::state::COOKIE;

/// The CSRF token of the request's session, for pages to embed.
#[derive(Debug, Clone)]
pub struct Csrf(pub String);

/// What a route needs. `None`: nothing (public).
pub fn required(method: &Method, path: &str) -> Option<Perm> {
    let read = method == Method::GET || method == Method::HEAD;
    if read {
        if path == "/login" || path.starts_with("/assets/") {
            return None;
        }
        if path == "/api/v1/export" || path.starts_with("/api/v1/users") {
            return Some(Perm::Admin);
        }
        if path == "/api/v1/me" || path == "/api/v1/tokens" {
            return Some(Perm::Own);
        }
        return Some(Perm::Read);
    }
    if path == "/api/v1/login" {
        return None;
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    Some(match parts.as_slice() {
        ["api", "v1", "logout"] | ["api", "v1", "me", "password"] | ["api", "v1", "tokens"] => {
            Perm::Own
        }
        ["api", "v1", "tokens", _, "revoke"] => Perm::Own,
        ["api", "v1", "reports", "verify"] => Perm::Read,
        ["api", "v1", "shipments"] => Perm::Ship,
        ["api", "v1", "shipments", _, "close"] => Perm::Sign,
        [
            "api",
            "v1",
            "shipments",
            _,
            "depart" | "eta" | "handoff" | "arrive",
        ] => Perm::Ship,
        ["api", "v1", "alerts", _, "ack"] => Perm::Ack,
        ["api", "v1", "alerts", _, "assess"] => Perm::Assess,
        _ => Perm::Admin,
    })
}

fn perm_text(p: Perm) -> &'static str {
    match p {
        Perm::Read => "read (any role)",
        Perm::Own => "any signed-in person",
        Perm::Ship => "create or move shipments (logistics or admin)",
        Perm::Ack => "acknowledge alerts (logistics, qa or admin)",
        Perm::Assess => "assess alerts (qa)",
        Perm::Sign => "sign dispositions (qa)",
        Perm::Admin => "administer (admin)",
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a browser request comes from this site: `Sec-Fetch-Site` (when
/// the browser sends it) is `same-origin` or `none`, and `Origin` (when
/// sent) names this host.
fn same_site(headers: &HeaderMap, uri: &axum::http::Uri) -> Result<(), String> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return Err(format!(
            "cross-site request refused (Sec-Fetch-Site: {site})"
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        // HTTP/1.1 names the host in Host, HTTP/2 in the URI's authority.
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .unwrap_or("");
        let o = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .unwrap_or("");
        if o != host {
            return Err(format!(
                "cross-origin request refused (Origin {origin} is not this host {host})"
            ));
        }
    }
    Ok(())
}

fn unauthorized(msg: impl Into<String>) -> Response {
    ApiError(StatusCode::UNAUTHORIZED, msg.into()).into_response()
}

fn forbidden(msg: impl Into<String>) -> Response {
    ApiError(StatusCode::FORBIDDEN, msg.into()).into_response()
}

fn is_dashboard_page(path: &str) -> bool {
    path == "/" || path.starts_with("/shipments/") || path.starts_with("/devices/")
}

/// The middleware: identifies the person, checks their role for the route,
/// and protects session changes against cross-site requests.
pub async fn middleware(State(s): State<AppState>, mut req: Request<Body>, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let change = method != Method::GET && method != Method::HEAD;
    let Some(perm) = required(&method, &path) else {
        req.extensions_mut().insert(PageAccess(true));
        return next.run(req).await;
    };
    let now = crate::ingest::now_ms();

    // Who is asking.
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_string());
    let mut csrf = None;
    let actor: Option<Actor> = if let Some(b) = bearer {
        if s.legacy_token
            .as_ref()
            .is_some_and(|t| ct_eq(t.as_bytes(), b.as_bytes()))
        {
            Some(Actor::legacy())
        } else {
            let users = s.users.clone();
            match tokio::task::spawn_blocking(move || users.by_token(&b)).await {
                Ok(Ok(a)) => Some(a),
                Ok(Err(e @ AuthError::Storage(_))) => {
                    return ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                        .into_response();
                }
                Ok(Err(e)) => return unauthorized(e.to_string()),
                Err(e) => {
                    return ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                        .into_response();
                }
            }
        }
    } else if let Some(c) = session_cookie(req.headers()) {
        // The pages' own polling carries X-Coldchain-Poll: it does not keep
        // an unattended session alive.
        let touch = !req.headers().contains_key("x-coldchain-poll");
        let users = s.users.clone();
        match tokio::task::spawn_blocking(move || users.by_session(&c, now, touch)).await {
            Ok(Ok(found)) => found.map(|(a, t)| {
                csrf = Some(t);
                a
            }),
            Ok(Err(e)) => {
                return ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
            }
            Err(e) => {
                return ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
            }
        }
    } else {
        None
    };

    let Some(actor) = actor else {
        if !change && perm == Perm::Read && s.anonymous_reads {
            req.extensions_mut().insert(PageAccess(true));
            return next.run(req).await;
        }
        if !change && is_dashboard_page(&path) {
            // The page comes without data and sends the person to log in.
            req.extensions_mut().insert(PageAccess(false));
            return next.run(req).await;
        }
        return unauthorized(
            "missing bearer token or session: log in (POST /api/v1/login, or the dashboard's /login page) or send Authorization: Bearer <personal API token>",
        );
    };

    if let Some(expected) = &csrf
        && change
    {
        if let Err(e) = same_site(req.headers(), req.uri()) {
            return forbidden(e);
        }
        let given = req
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ct_eq(given.as_bytes(), expected.as_bytes()) {
            return forbidden(
                "missing or wrong X-CSRF-Token: changes made with a session carry the token of the page's csrf-token meta element",
            );
        }
    }
    if actor.must_change_password
        && path != "/api/v1/me/password"
        && path != "/api/v1/logout"
        && path != "/api/v1/me"
    {
        return forbidden(format!(
            "{} must choose a new password first (the dashboard's login page asks for it, or POST /api/v1/me/password): an admin reset it",
            actor.user
        ));
    }
    if !actor.role.may(perm) {
        return forbidden(format!(
            "{} ({}) may not {}",
            actor.user,
            actor.role.name(),
            perm_text(perm)
        ));
    }
    if let Some(t) = csrf {
        req.extensions_mut().insert(Csrf(t));
    }
    req.extensions_mut().insert(actor);
    req.extensions_mut().insert(PageAccess(true));
    next.run(req).await
}

/// Routes of authentication, accounts and tokens.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(change_password))
        .routes(routes!(list_users, add_user))
        .routes(routes!(disable_user))
        .routes(routes!(enable_user))
        .routes(routes!(reset_user))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
}

fn blocking_err(e: tokio::task::JoinError) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Checks a person's password (login or signature), records a failure, a
/// lockout and its reason in the audit trail. Runs the hash on a blocking thread.
pub async fn check_password(
    s: &AppState,
    name: &str,
    password: &str,
    purpose: &'static str,
) -> Result<crate::users::User, ApiError> {
    let (s2, name2, pw) = (s.clone(), name.to_string(), password.to_string());
    tokio::task::spawn_blocking(move || {
        let now = crate::ingest::now_ms();
        match s2.users.check_password(&name2, &pw) {
            Ok(u) => Ok(u),
            Err((e, locked_now)) => {
                let action = if locked_now {
                    "user.lockout"
                } else {
                    "user.password_failure"
                };
                tracing::warn!(user = %name2, purpose, "{e}");
                if !matches!(e, AuthError::Storage(_)) {
                    s2.audit.append(
                        now,
                        "daemon",
                        action,
                        &name2,
                        serde_json::json!({ "purpose": purpose, "reason": e.to_string() }),
                    )?;
                    s2.store.sync()?;
                }
                let status = match e {
                    AuthError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
                    _ if purpose == "login" => StatusCode::UNAUTHORIZED,
                    _ => StatusCode::FORBIDDEN,
                };
                Err(ApiError(status, e.to_string()))
            }
        }
    })
    .await
    .map_err(blocking_err)?
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    name: String,
    password: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/login",
    tag = "people",
    summary = "Log in: sets the session cookie (HttpOnly, SameSite=Strict, Secure on TLS); the answer carries the CSRF token. 401 after a wrong password (counted; the account locks after http.lockout_after)",
    request_body = LoginBody,
    responses((status = 200, description = "The person logged in, and the session's CSRF token", body = LoggedIn))
)]
async fn login(
    State(s): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    JsonBody(b): JsonBody<LoginBody>,
) -> Result<Response, ApiError> {
    same_site(&headers, &uri).map_err(|e| ApiError(StatusCode::FORBIDDEN, e))?;
    let u = check_password(&s, &b.name, &b.password, "login").await?;
    let now = crate::ingest::now_ms();
    let (s1, name) = (s.clone(), u.name.clone());
    let (cookie, csrf) = tokio::task::spawn_blocking(move || s1.users.start_session(&name, now))
        .await
        .map_err(blocking_err)??;
    let actor = Actor {
        user: u.name.clone(),
        full_name: u.full_name.clone(),
        role: u.role,
        via: Via::Session,
        must_change_password: u.must_change_password,
    };
    let s2 = s.clone();
    let a2 = actor.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        s2.audit
            .append_by(now, &a2, "user.login", &a2.user, serde_json::json!({}))?;
        s2.store.sync()?;
        Ok(())
    })
    .await
    .map_err(blocking_err)??;
    let secure = if s.tls { "; Secure" } else { "" };
    let set = format!(
        "{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        s.users.idle_ms / 1000
    );
    Ok((
        [(header::SET_COOKIE, set)],
        Json(LoggedIn {
            user: actor.user,
            full_name: actor.full_name,
            role: actor.role,
            must_change_password: actor.must_change_password,
            csrf,
        }),
    )
        .into_response())
}

/// The answer to logging in (`POST /api/v1/login`).
#[derive(Serialize, ToSchema)]
struct LoggedIn {
    /// Login name.
    user: String,
    /// Full name.
    full_name: String,
    /// Role.
    role: Role,
    /// A new password must be chosen before anything else.
    must_change_password: bool,
    /// The session's CSRF token: send it as `X-CSRF-Token` with each change.
    csrf: String,
}

/// The answer to logging out.
#[derive(Serialize, ToSchema)]
struct LoggedOut {
    /// Always `true`.
    logged_out: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/logout",
    tag = "people",
    summary = "End the session",
    responses((status = 200, description = "logged_out: true", body = LoggedOut))
)]
async fn logout(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(c) = session_cookie(&headers) {
        let s1 = s.clone();
        tokio::task::spawn_blocking(move || s1.users.end_session(&c))
            .await
            .map_err(blocking_err)??;
    }
    let secure = if s.tls { "; Secure" } else { "" };
    Ok((
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
        )],
        Json(LoggedOut { logged_out: true }),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "people",
    summary = "The authenticated person: user, full_name, role, via (and the session's csrf)",
    responses((status = 200, description = "The person", body = Me))
)]
async fn me(Extension(actor): Extension<Actor>, csrf: Option<Extension<Csrf>>) -> Json<Me> {
    Json(Me {
        actor,
        csrf: csrf.map(|Extension(Csrf(t))| t),
    })
}

/// The authenticated person (`GET /api/v1/me`).
#[derive(Serialize, ToSchema)]
struct Me {
    #[serde(flatten)]
    actor: Actor,
    /// The session's CSRF token (sessions only).
    #[serde(skip_serializing_if = "Option::is_none")]
    csrf: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    old_password: String,
    new_password: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/me/password",
    tag = "people",
    summary = "Change your password",
    request_body = PasswordBody,
    responses((status = 200, description = "user, changed: true", body = PasswordChanged))
)]
async fn change_password(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    JsonBody(b): JsonBody<PasswordBody>,
) -> Result<Json<PasswordChanged>, ApiError> {
    if actor.via == Via::LegacyToken {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the legacy shared token has no password".into(),
        ));
    }
    check_password(&s, &actor.user, &b.old_password, "password change").await?;
    let s2 = s.clone();
    tokio::task::spawn_blocking(move || -> Result<PasswordChanged, ApiError> {
        let u = s2
            .users
            .set_password(&actor.user, &b.new_password, false)?
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
        s2.audit.append_by(
            crate::ingest::now_ms(),
            &actor,
            "user.password_change",
            &u.name,
            serde_json::json!({}),
        )?;
        s2.store.sync()?;
        Ok(PasswordChanged {
            user: u.name,
            changed: true,
        })
    })
    .await
    .map_err(blocking_err)?
    .map(Json)
}

/// A password changed (`POST /api/v1/me/password`).
#[derive(Serialize, ToSchema)]
struct PasswordChanged {
    /// Login name.
    user: String,
    /// Always `true`.
    changed: bool,
}

#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "people",
    summary = "People (admin)",
    responses((status = 200, description = "Accounts, without password hashes", body = Vec<UserInfo>))
)]
async fn list_users(State(s): State<AppState>) -> Result<Json<Vec<UserInfo>>, ApiError> {
    let all = tokio::task::spawn_blocking(move || s.users.all())
        .await
        .map_err(blocking_err)??;
    Ok(Json(all.iter().map(UserInfo::from).collect()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AddUserBody {
    name: String,
    full_name: String,
    role: String,
    password: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "people",
    summary = "Add a person (admin)",
    request_body = AddUserBody,
    responses((status = 201, description = "The account", body = UserInfo))
)]
async fn add_user(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    JsonBody(b): JsonBody<AddUserBody>,
) -> Result<(StatusCode, Json<UserInfo>), ApiError> {
    let role = Role::parse(&b.role).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "field role = {:?}: expected viewer, logistics, qa or admin",
                b.role
            ),
        )
    })?;
    let u = tokio::task::spawn_blocking(move || -> Result<UserInfo, ApiError> {
        let now = crate::ingest::now_ms();
        let u = s
            .users
            .add(&b.name, &b.full_name, role, &b.password, &actor.user, now)?
            .map_err(|e| {
                let st = if e.contains("already exists") {
                    StatusCode::CONFLICT
                } else {
                    StatusCode::BAD_REQUEST
                };
                ApiError(st, e)
            })?;
        s.audit.append_by(
            now,
            &actor,
            "user.add",
            &u.name,
            serde_json::json!({ "full_name": u.full_name, "role": u.role }),
        )?;
        s.store.sync()?;
        Ok(UserInfo::from(&u))
    })
    .await
    .map_err(blocking_err)??;
    Ok((StatusCode::CREATED, Json(u)))
}

async fn set_disabled(
    s: AppState,
    actor: Actor,
    name: String,
    disabled: bool,
) -> Result<Json<UserInfo>, ApiError> {
    tokio::task::spawn_blocking(move || -> Result<Json<UserInfo>, ApiError> {
        if disabled && name == actor.user {
            return Err(ApiError(
                StatusCode::CONFLICT,
                "an admin cannot disable their own account".into(),
            ));
        }
        let u = s
            .users
            .set_disabled(&name, disabled)?
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no user {name:?}")))?;
        s.audit.append_by(
            crate::ingest::now_ms(),
            &actor,
            if disabled {
                "user.disable"
            } else {
                "user.enable"
            },
            &name,
            serde_json::json!({}),
        )?;
        s.store.sync()?;
        Ok(Json(UserInfo::from(&u)))
    })
    .await
    .map_err(blocking_err)?
}

#[utoipa::path(
    post,
    path = "/api/v1/users/{name}/disable",
    tag = "people",
    summary = "Disable an account (admin): sessions end, tokens refused",
    params(("name" = String, Path, description = "Login name")),
    responses((status = 200, description = "The account", body = UserInfo))
)]
async fn disable_user(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Result<Json<UserInfo>, ApiError> {
    set_disabled(s, actor, name, true).await
}

#[utoipa::path(
    post,
    path = "/api/v1/users/{name}/enable",
    tag = "people",
    summary = "Enable an account (admin)",
    params(("name" = String, Path, description = "Login name")),
    responses((status = 200, description = "The account", body = UserInfo))
)]
async fn enable_user(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Result<Json<UserInfo>, ApiError> {
    set_disabled(s, actor, name, false).await
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    /// A temporary password; generated (and returned once) when absent.
    #[serde(default)]
    password: Option<String>,
}

/// An admin's forced reset: a temporary password, the account unlocked, the
/// person's sessions ended; they must choose a new password at next login.
#[utoipa::path(
    post,
    path = "/api/v1/users/{name}/reset",
    tag = "people",
    summary = "Force a password reset (admin): unlocks; a temporary password (given, or generated and returned once); the person must choose a new one",
    params(("name" = String, Path, description = "Login name")),
    request_body = ResetBody,
    responses((status = 200, description = "user, must_change_password, temporary_password when generated", body = PasswordReset))
)]
async fn reset_user(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    JsonBody(b): JsonBody<ResetBody>,
) -> Result<Json<PasswordReset>, ApiError> {
    tokio::task::spawn_blocking(move || -> Result<Json<PasswordReset>, ApiError> {
        let (pw, generated) = match b.password {
            Some(p) => (p, false),
            None => {
                use base64::Engine;
                let mut bytes = [0u8; 12];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
                (
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
                    true,
                )
            }
        };
        let u = s.users.set_password(&name, &pw, true)?.map_err(|e| {
            let st = if e.starts_with("no user") {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            ApiError(st, e)
        })?;
        s.audit.append_by(
            crate::ingest::now_ms(),
            &actor,
            "user.reset",
            &u.name,
            serde_json::json!({ "unlocked": true }),
        )?;
        s.store.sync()?;
        Ok(Json(PasswordReset {
            user: u.name,
            must_change_password: true,
            temporary_password: generated.then_some(pw),
        }))
    })
    .await
    .map_err(blocking_err)?
}

/// A forced reset (`POST /api/v1/users/{name}/reset`).
#[derive(Serialize, ToSchema)]
struct PasswordReset {
    /// Login name.
    user: String,
    /// Always `true`: the person must choose a new password.
    must_change_password: bool,
    /// The generated temporary password, shown this once (absent when the
    /// admin gave one).
    #[serde(skip_serializing_if = "Option::is_none")]
    temporary_password: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "people",
    summary = "Personal API tokens (yours; an admin's: everyone's), without secrets",
    responses((status = 200, description = "Tokens", body = Vec<crate::users::ApiToken>))
)]
async fn list_tokens(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
) -> Result<Json<Vec<crate::users::ApiToken>>, ApiError> {
    let all = tokio::task::spawn_blocking(move || {
        let mine = (actor.role != Role::Admin).then_some(actor.user.clone());
        s.users.tokens(mine.as_deref())
    })
    .await
    .map_err(blocking_err)??;
    Ok(Json(all))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    label: String,
    /// Admins may mint a token for another person.
    #[serde(default)]
    user: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "people",
    summary = "Mint a personal API token, returned once as `token` (admins may give `user`)",
    request_body = TokenBody,
    responses((status = 201, description = "The token with its secret, once", body = TokenMinted))
)]
async fn create_token(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    JsonBody(b): JsonBody<TokenBody>,
) -> Result<(StatusCode, Json<TokenMinted>), ApiError> {
    let owner = b.user.clone().unwrap_or_else(|| actor.user.clone());
    if owner != actor.user && actor.role != Role::Admin {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "only an admin may mint a token for another person".into(),
        ));
    }
    if b.label.trim().is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "field label: what is this token for? (must not be empty)".into(),
        ));
    }
    let v = tokio::task::spawn_blocking(move || -> Result<TokenMinted, ApiError> {
        if s.users.get(&owner)?.is_none() {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no user {owner:?} (the legacy shared token cannot own tokens: add a person with `coldchain user add`)"),
            ));
        }
        let now = crate::ingest::now_ms();
        let (t, text) = s.users.mint_token(&owner, b.label.trim(), now)?;
        s.audit.append_by(
            now,
            &actor,
            "token.create",
            &owner,
            serde_json::json!({ "token": t.id, "label": t.label }),
        )?;
        s.store.sync()?;
        Ok(TokenMinted {
            id: t.id,
            user: t.user,
            label: t.label,
            created_ms: t.created_ms,
            revoked_ms: t.revoked_ms,
            token: text,
        })
    })
    .await
    .map_err(blocking_err)??;
    Ok((StatusCode::CREATED, Json(v)))
}

/// A token just minted (`POST /api/v1/tokens`): the stored token without
/// its secret's hash, and the token itself, shown this once.
#[derive(Serialize, ToSchema)]
struct TokenMinted {
    /// Public id (the middle part of the token).
    id: String,
    /// Owner's login name.
    user: String,
    /// What it is for.
    label: String,
    /// Created, ms.
    created_ms: i64,
    /// Revoked, ms (`null`: in force).
    #[schema(required = true)]
    revoked_ms: Option<i64>,
    /// The token to send as `Authorization: Bearer ...`: shown this once,
    /// stored only as a hash.
    token: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/tokens/{id}/revoke",
    tag = "people",
    summary = "Revoke a token (its owner or an admin)",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 200, description = "The revoked token", body = crate::users::ApiToken))
)]
async fn revoke_token(
    State(s): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<crate::users::ApiToken>, ApiError> {
    tokio::task::spawn_blocking(move || -> Result<Json<crate::users::ApiToken>, ApiError> {
        let t = s
            .users
            .token(&id)?
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no token {id:?}")))?;
        if t.user != actor.user && actor.role != Role::Admin {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "only the token's owner or an admin may revoke it".into(),
            ));
        }
        let now = crate::ingest::now_ms();
        let t = s
            .users
            .revoke_token(&id, now)?
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no token {id:?}")))?;
        s.audit.append_by(
            now,
            &actor,
            "token.revoke",
            &t.user,
            serde_json::json!({ "token": t.id }),
        )?;
        s.store.sync()?;
        Ok(Json(t))
    })
    .await
    .map_err(blocking_err)?
}

/// Counters for `/metrics`: (name, help, value).
pub fn counters(s: &AppState) -> Vec<(&'static str, &'static str, u64)> {
    let st = &s.users.stats;
    vec![
        (
            "coldchain_auth_password_failures",
            "Wrong passwords (logins, signatures, password changes) since start",
            st.password_failures.load(Ordering::Relaxed),
        ),
        (
            "coldchain_auth_lockouts",
            "Accounts locked after too many wrong passwords since start",
            st.lockouts.load(Ordering::Relaxed),
        ),
        (
            "coldchain_auth_token_failures",
            "Requests refused for an unknown or revoked API token since start",
            st.token_failures.load(Ordering::Relaxed),
        ),
        (
            "coldchain_auth_logins",
            "Successful logins since start",
            st.logins.load(Ordering::Relaxed),
        ),
    ]
}
