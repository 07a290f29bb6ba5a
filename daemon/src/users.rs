//! People: accounts with roles, passwords (Argon2id), per-user API tokens,
//! dashboard sessions, lockout (21 CFR 11.10(d), (g); 11.300).
//!
//! Accounts live in the daemon's sled database (tree `users`, keyed by the
//! login name), API tokens in tree `api_tokens` (keyed by the token's public
//! id; only the SHA-256 of its secret is stored), dashboard sessions in tree
//! `sessions` (keyed by the SHA-256 of the cookie's secret, never the secret
//! itself), so a session survives a restart and, on PostgreSQL, is known to
//! every daemon instance sharing the database.
//!
//! A password is never logged, never echoed and never stored: only its
//! Argon2id PHC string (salt and parameters included). After
//! `http.lockout_after` wrong passwords in a row an account is locked until an
//! admin resets its password; every failure and lockout is counted in
//! `/metrics` and recorded in the audit trail.

use std::sync::atomic::{AtomicU64, Ordering};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a person may do.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads only.
    Viewer,
    /// Shipments (create, depart, ETA, hand-off, arrive) and acknowledgements.
    Logistics,
    /// Acknowledgements, excursion assessments and the signed disposition.
    Qa,
    /// People, tokens, devices, exports, shipments and acknowledgements; not
    /// assessments or signatures (separation of duties).
    Admin,
}

/// A kind of action, checked on the server for every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// Any read.
    Read,
    /// Create and move shipments.
    Ship,
    /// Acknowledge an alert.
    Ack,
    /// Assess an excursion (QA review before release).
    Assess,
    /// Sign a disposition (close a shipment).
    Sign,
    /// Accounts, devices, exports.
    Admin,
    /// Any authenticated person: own password, own tokens, logout.
    Own,
}

impl Role {
    /// Parses `viewer`, `logistics`, `qa`, `admin`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "logistics" => Some(Role::Logistics),
            "qa" => Some(Role::Qa),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The name used in the API and the config.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Logistics => "logistics",
            Role::Qa => "qa",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may do `p`.
    pub fn may(self, p: Perm) -> bool {
        use Perm::*;
        match p {
            Read | Own => true,
            Ship => matches!(self, Role::Logistics | Role::Admin),
            Ack => matches!(self, Role::Logistics | Role::Qa | Role::Admin),
            Assess | Sign => self == Role::Qa,
            Admin => self == Role::Admin,
        }
    }
}

/// A stored account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    /// Login name and user id: 1-32 of `a-z 0-9 . _ -`.
    pub name: String,
    /// Full name, as a signature shows it.
    pub full_name: String,
    /// Role.
    pub role: Role,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Disabled by an admin: cannot log in, tokens refused.
    #[serde(default)]
    pub disabled: bool,
    /// Wrong passwords in a row.
    #[serde(default)]
    pub failures: u32,
    /// Locked after too many failures, until an admin resets the password.
    #[serde(default)]
    pub locked: bool,
    /// Set by an admin's reset: the person must choose a new password first.
    #[serde(default)]
    pub must_change_password: bool,
    /// Created, ms.
    pub created_ms: i64,
    /// By whom (user id, or `command line` for the first admin).
    pub created_by: String,
}

/// The public view of an account (no hash).
#[derive(utoipa::ToSchema, Debug, Clone, Serialize)]
pub struct UserInfo {
    /// Login name.
    pub name: String,
    /// Full name.
    pub full_name: String,
    /// Role.
    pub role: Role,
    /// Disabled.
    pub disabled: bool,
    /// Locked after failures.
    pub locked: bool,
    /// Wrong passwords in a row.
    pub failures: u32,
    /// Must change the password first.
    pub must_change_password: bool,
    /// Created, ms.
    pub created_ms: i64,
    /// By whom.
    pub created_by: String,
}

impl From<&User> for UserInfo {
    fn from(u: &User) -> Self {
        UserInfo {
            name: u.name.clone(),
            full_name: u.full_name.clone(),
            role: u.role,
            disabled: u.disabled,
            locked: u.locked,
            failures: u.failures,
            must_change_password: u.must_change_password,
            created_ms: u.created_ms,
            created_by: u.created_by.clone(),
        }
    }
}

/// A stored API token (its secret only as a hash).
#[derive(utoipa::ToSchema, Debug, Clone, Serialize, Deserialize)]
pub struct ApiToken {
    /// Public id (the middle part of the token).
    pub id: String,
    /// Owner's login name.
    pub user: String,
    /// What it is for.
    pub label: String,
    /// SHA-256 of the secret part, hex.
    pub secret_sha256: String,
    /// Created, ms.
    pub created_ms: i64,
    /// Revoked, ms.
    #[serde(default)]
    pub revoked_ms: Option<i64>,
}

/// How a request was authenticated.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// A dashboard session (cookie).
    Session,
    /// A personal API token (its id).
    Token(String),
    /// The legacy shared `http.token` of the config.
    LegacyToken,
}

/// The authenticated person behind a request.
#[derive(utoipa::ToSchema, Debug, Clone, Serialize)]
pub struct Actor {
    /// User id (login name); `legacy-token` for the shared token.
    pub user: String,
    /// Full name.
    pub full_name: String,
    /// Role.
    pub role: Role,
    /// How.
    pub via: Via,
    /// Must change the password before anything else.
    pub must_change_password: bool,
}

/// The user id of the legacy shared token's identity.
pub const LEGACY_USER: &str = "legacy-token";

impl Actor {
    /// The identity of the legacy shared `http.token`: an admin.
    pub fn legacy() -> Actor {
        Actor {
            user: LEGACY_USER.into(),
            full_name: "shared API token (http.token, legacy)".into(),
            role: Role::Admin,
            via: Via::LegacyToken,
            must_change_password: false,
        }
    }

    fn of(u: &User, via: Via) -> Actor {
        Actor {
            user: u.name.clone(),
            full_name: u.full_name.clone(),
            role: u.role,
            via,
            must_change_password: u.must_change_password,
        }
    }
}

/// Why authentication failed. The messages never say which of name and
/// password was wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// Unknown user or wrong password.
    #[error("wrong user name or password")]
    Wrong,
    /// Locked after too many failures.
    #[error(
        "account {0} is locked after too many wrong passwords: an admin must reset its password"
    )]
    Locked(String),
    /// Disabled.
    #[error("account {0} is disabled")]
    Disabled(String),
    /// Unknown, malformed or revoked token.
    #[error("wrong bearer token: unknown or revoked API token")]
    BadToken,
    /// Storage.
    #[error("storage: {0}")]
    Storage(String),
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct AuthStats {
    /// Wrong passwords (logins and signatures).
    pub password_failures: AtomicU64,
    /// Accounts locked.
    pub lockouts: AtomicU64,
    /// Requests refused for a bad token.
    pub token_failures: AtomicU64,
    /// Successful logins.
    pub logins: AtomicU64,
}

/// A dashboard session as stored in tree `sessions`, under the SHA-256 (hex)
/// of the cookie's secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    /// Login name.
    user: String,
    /// The CSRF token the session's changes must carry.
    csrf: String,
    /// Logged in, ms.
    created_ms: i64,
    /// Last request by the person (not a page's polling), ms; written only
    /// when it moved by more than [`Users::touch_every_ms`].
    last_ms: i64,
}

/// Accounts, tokens and sessions.
#[derive(Debug)]
pub struct Users {
    users: crate::kv::Tree,
    tokens: crate::kv::Tree,
    sessions: crate::kv::Tree,
    /// Wrong passwords in a row before an account locks.
    pub lockout_after: u32,
    /// Session idle timeout, ms.
    pub idle_ms: i64,
    /// Counters.
    pub stats: AuthStats,
    dummy_hash: String,
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_b64(n: usize) -> String {
    use base64::Engine;
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Hashes a password with Argon2id (default parameters: 19 MiB, 2 passes).
pub fn hash_password(pw: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(pw.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))
}

fn verify_password(pw: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| Argon2::default().verify_password(pw.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

/// Checks a login name: 1-32 of `a-z 0-9 . _ -`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !ok || name == LEGACY_USER || name == "daemon" {
        return Err(format!(
            "user name {name:?}: expected 1-32 characters of a-z 0-9 . _ - (not `daemon` or `{LEGACY_USER}`)"
        ));
    }
    Ok(())
}

/// Checks a new password: at least 12 characters.
pub fn check_password_rules(pw: &str) -> Result<(), String> {
    if pw.chars().count() < 12 {
        return Err("password: expected at least 12 characters".into());
    }
    Ok(())
}

impl Users {
    /// Opens the trees.
    pub fn open(db: &crate::kv::Db, lockout_after: u32, idle_s: u64) -> anyhow::Result<Users> {
        Ok(Users {
            users: db.open_tree("users")?,
            tokens: db.open_tree("api_tokens")?,
            sessions: db.open_tree("sessions")?,
            lockout_after: lockout_after.max(1),
            idle_ms: idle_s as i64 * 1000,
            stats: AuthStats::default(),
            dummy_hash: hash_password("no such user: timing only")?,
        })
    }

    /// One account.
    pub fn get(&self, name: &str) -> anyhow::Result<Option<User>> {
        Ok(match self.users.get(name.as_bytes())? {
            Some(v) => Some(serde_json::from_slice(&v)?),
            None => None,
        })
    }

    fn put(&self, u: &User) -> anyhow::Result<()> {
        self.users
            .insert(u.name.as_bytes(), serde_json::to_vec(u)?)?;
        Ok(())
    }

    /// Every account, by name.
    pub fn all(&self) -> anyhow::Result<Vec<User>> {
        let mut out = Vec::new();
        for kv in self.users.iter() {
            let (_, v) = kv?;
            out.push(serde_json::from_slice(&v)?);
        }
        Ok(out)
    }

    /// Creates an account. `Err` text names what was wrong.
    pub fn add(
        &self,
        name: &str,
        full_name: &str,
        role: Role,
        password: &str,
        by: &str,
        now: i64,
    ) -> anyhow::Result<Result<User, String>> {
        if let Err(e) = check_name(name) {
            return Ok(Err(e));
        }
        if full_name.trim().is_empty() {
            return Ok(Err("full_name: the person's full name, as their signature shows it (must not be empty)".into()));
        }
        if let Err(e) = check_password_rules(password) {
            return Ok(Err(e));
        }
        let u = User {
            name: name.into(),
            full_name: full_name.trim().into(),
            role,
            password_hash: hash_password(password)?,
            disabled: false,
            failures: 0,
            locked: false,
            must_change_password: false,
            created_ms: now,
            created_by: by.into(),
        };
        let v = serde_json::to_vec(&u)?;
        match self
            .users
            .compare_and_swap(name.as_bytes(), None::<&[u8]>, Some(v))?
        {
            Ok(()) => Ok(Ok(u)),
            Err(_) => Ok(Err(format!("user {name} already exists"))),
        }
    }

    /// Checks a password (login or signature). Counts failures, locks the
    /// account after [`Users::lockout_after`] in a row. Returns the account
    /// and whether this failure locked it.
    pub fn check_password(&self, name: &str, pw: &str) -> Result<User, (AuthError, bool)> {
        let st = |e: anyhow::Error| (AuthError::Storage(e.to_string()), false);
        let Some(mut u) = self.get(name).map_err(st)? else {
            let _ = verify_password(pw, &self.dummy_hash);
            self.stats.password_failures.fetch_add(1, Ordering::Relaxed);
            return Err((AuthError::Wrong, false));
        };
        if u.locked {
            self.stats.password_failures.fetch_add(1, Ordering::Relaxed);
            return Err((AuthError::Locked(u.name), false));
        }
        if verify_password(pw, &u.password_hash) {
            // Said only to whoever knows the password: a disabled account
            // is not revealed to a guess.
            if u.disabled {
                return Err((AuthError::Disabled(u.name), false));
            }
            if u.failures != 0 {
                u.failures = 0;
                self.put(&u).map_err(st)?;
            }
            return Ok(u);
        }
        self.stats.password_failures.fetch_add(1, Ordering::Relaxed);
        u.failures += 1;
        let locks = u.failures >= self.lockout_after;
        if locks {
            u.locked = true;
            self.stats.lockouts.fetch_add(1, Ordering::Relaxed);
            self.end_sessions_of(&u.name).map_err(st)?;
        }
        self.put(&u).map_err(st)?;
        Err((
            if locks {
                AuthError::Locked(u.name)
            } else {
                AuthError::Wrong
            },
            locks,
        ))
    }

    /// Sets a new password. `forced`: an admin's reset (unlocks, and the
    /// person must choose their own next). Ends the person's sessions.
    pub fn set_password(
        &self,
        name: &str,
        pw: &str,
        forced: bool,
    ) -> anyhow::Result<Result<User, String>> {
        let Some(mut u) = self.get(name)? else {
            return Ok(Err(format!("no user {name}")));
        };
        if let Err(e) = check_password_rules(pw) {
            return Ok(Err(e));
        }
        u.password_hash = hash_password(pw)?;
        u.failures = 0;
        u.locked = false;
        u.must_change_password = forced;
        self.put(&u)?;
        self.end_sessions_of(name)?;
        Ok(Ok(u))
    }

    /// Disables or enables an account; disabling ends its sessions.
    pub fn set_disabled(&self, name: &str, disabled: bool) -> anyhow::Result<Option<User>> {
        let Some(mut u) = self.get(name)? else {
            return Ok(None);
        };
        u.disabled = disabled;
        self.put(&u)?;
        if disabled {
            self.end_sessions_of(name)?;
        }
        Ok(Some(u))
    }

    /// Mints a token for `user`; returns the stored record and the token
    /// text (shown once: only its hash is kept).
    pub fn mint_token(
        &self,
        user: &str,
        label: &str,
        now: i64,
    ) -> anyhow::Result<(ApiToken, String)> {
        let mut idb = [0u8; 6];
        rand::rngs::OsRng.fill_bytes(&mut idb);
        let id = hex::encode(idb);
        let secret = random_b64(32);
        let t = ApiToken {
            id: id.clone(),
            user: user.into(),
            label: label.into(),
            secret_sha256: sha256_hex(&secret),
            created_ms: now,
            revoked_ms: None,
        };
        self.tokens.insert(id.as_bytes(), serde_json::to_vec(&t)?)?;
        Ok((t, format!("cct_{id}_{secret}")))
    }

    /// Every token record (no secrets), optionally of one user.
    pub fn tokens(&self, user: Option<&str>) -> anyhow::Result<Vec<ApiToken>> {
        let mut out = Vec::new();
        for kv in self.tokens.iter() {
            let (_, v) = kv?;
            let t: ApiToken = serde_json::from_slice(&v)?;
            if user.is_none_or(|u| u == t.user) {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// One token record.
    pub fn token(&self, id: &str) -> anyhow::Result<Option<ApiToken>> {
        Ok(match self.tokens.get(id.as_bytes())? {
            Some(v) => Some(serde_json::from_slice(&v)?),
            None => None,
        })
    }

    /// Revokes a token (kept, marked revoked).
    pub fn revoke_token(&self, id: &str, now: i64) -> anyhow::Result<Option<ApiToken>> {
        let Some(mut t) = self.token(id)? else {
            return Ok(None);
        };
        if t.revoked_ms.is_none() {
            t.revoked_ms = Some(now);
            self.tokens.insert(id.as_bytes(), serde_json::to_vec(&t)?)?;
        }
        Ok(Some(t))
    }

    /// The person behind a personal token `cct_<id>_<secret>`.
    pub fn by_token(&self, text: &str) -> Result<Actor, AuthError> {
        let bad = || {
            self.stats.token_failures.fetch_add(1, Ordering::Relaxed);
            AuthError::BadToken
        };
        let Some((id, secret)) = text.strip_prefix("cct_").and_then(|r| r.split_once('_')) else {
            return Err(bad());
        };
        let t = self
            .token(id)
            .map_err(|e| AuthError::Storage(e.to_string()))?
            .ok_or_else(bad)?;
        if t.revoked_ms.is_some()
            || !ct_eq(sha256_hex(secret).as_bytes(), t.secret_sha256.as_bytes())
        {
            return Err(bad());
        }
        let u = self
            .get(&t.user)
            .map_err(|e| AuthError::Storage(e.to_string()))?
            .ok_or_else(bad)?;
        if u.disabled {
            return Err(AuthError::Disabled(u.name));
        }
        if u.locked {
            return Err(AuthError::Locked(u.name));
        }
        Ok(Actor::of(&u, Via::Token(t.id)))
    }

    /// How far the stored last use of a session may lag behind the
    /// person's last request: a minute, or a tenth of the idle timeout if
    /// that is shorter. Requests closer together than this do not write.
    pub fn touch_every_ms(&self) -> i64 {
        (self.idle_ms / 10).min(60_000)
    }

    /// Starts a session (stored); returns (cookie value, CSRF token).
    pub fn start_session(&self, user: &str, now: i64) -> anyhow::Result<(String, String)> {
        let id = random_b64(32);
        let csrf = random_b64(24);
        self.purge_expired_sessions(now)?;
        let sess = Session {
            user: user.into(),
            csrf: csrf.clone(),
            created_ms: now,
            last_ms: now,
        };
        self.sessions
            .insert(sha256_hex(&id).as_bytes(), serde_json::to_vec(&sess)?)?;
        self.stats.logins.fetch_add(1, Ordering::Relaxed);
        Ok((id, csrf))
    }

    fn session_at(&self, key: &[u8], v: &[u8]) -> Result<Session, AuthError> {
        serde_json::from_slice(v).map_err(|e| {
            AuthError::Storage(format!(
                "tree sessions, key {}: expected a session (user, csrf, created_ms, last_ms): {e}",
                String::from_utf8_lossy(&key[..key.len().min(12)])
            ))
        })
    }

    /// The person behind a session cookie and the session's CSRF token;
    /// `touch`: a person's request, which restarts the idle timer (a page's
    /// automatic polling does not). `Ok(None)`: unknown, expired (then
    /// removed), or the account is no longer usable (then every session of
    /// it is removed).
    pub fn by_session(
        &self,
        cookie: &str,
        now: i64,
        touch: bool,
    ) -> Result<Option<(Actor, String)>, AuthError> {
        let st = |e: crate::kv::Error| AuthError::Storage(format!("tree sessions: {e}"));
        let key = sha256_hex(cookie);
        let Some(old) = self.sessions.get(key.as_bytes()).map_err(st)? else {
            return Ok(None);
        };
        let mut sess = self.session_at(key.as_bytes(), &old)?;
        if now - sess.last_ms >= self.idle_ms {
            // Removed only if nobody used it meanwhile (another instance).
            self.sessions
                .compare_and_swap(key.as_bytes(), Some(&old[..]), None::<&[u8]>)
                .map_err(st)?
                .ok();
            return Ok(None);
        }
        let Some(u) = self
            .get(&sess.user)
            .map_err(|e| AuthError::Storage(e.to_string()))?
        else {
            self.sessions.remove(key.as_bytes()).map_err(st)?;
            return Ok(None);
        };
        if u.disabled || u.locked {
            self.end_sessions_of(&u.name)
                .map_err(|e| AuthError::Storage(e.to_string()))?;
            return Ok(None);
        }
        if touch && now - sess.last_ms > self.touch_every_ms() {
            sess.last_ms = now;
            let new = serde_json::to_vec(&sess).map_err(|e| AuthError::Storage(e.to_string()))?;
            // Only over the value read: a session ended meanwhile (logout on
            // another instance) is not brought back.
            self.sessions
                .compare_and_swap(key.as_bytes(), Some(&old[..]), Some(new))
                .map_err(st)?
                .ok();
        }
        Ok(Some((Actor::of(&u, Via::Session), sess.csrf)))
    }

    /// Ends one session.
    pub fn end_session(&self, cookie: &str) -> anyhow::Result<()> {
        self.sessions.remove(sha256_hex(cookie).as_bytes())?;
        Ok(())
    }

    /// Ends every session of a person; returns how many.
    pub fn end_sessions_of(&self, user: &str) -> anyhow::Result<usize> {
        self.remove_sessions(|s| s.user == user)
    }

    /// Removes the sessions idle for the timeout or longer; returns how
    /// many. Run at every login and by the daemon's periodic sweep.
    pub fn purge_expired_sessions(&self, now: i64) -> anyhow::Result<usize> {
        self.remove_sessions(|s| now - s.last_ms >= self.idle_ms)
    }

    /// Stored sessions (for `/metrics` and tests).
    pub fn session_count(&self) -> crate::kv::Result<usize> {
        self.sessions.len()
    }

    fn remove_sessions(&self, which: impl Fn(&Session) -> bool) -> anyhow::Result<usize> {
        let mut n = 0;
        for kv in self.sessions.iter() {
            let (k, v) = kv?;
            let s = self.session_at(&k, &v)?;
            if which(&s) {
                self.sessions.remove(&k)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> (tempfile::TempDir, Users) {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::kv::Db::from(sled::open(dir.path()).unwrap());
        (dir, Users::open(&db, 3, 60).unwrap())
    }

    #[test]
    fn passwords_are_stored_as_argon2id_and_checked() {
        let (_d, u) = users();
        let pw = "correct horse battery";
        u.add("ann", "Ann Example", Role::Qa, pw, "test", 1)
            .unwrap()
            .unwrap();
        let stored = u.get("ann").unwrap().unwrap();
        assert!(stored.password_hash.starts_with("$argon2id$"));
        assert!(!stored.password_hash.contains(pw));
        assert_eq!(
            u.check_password("ann", pw).unwrap().full_name,
            "Ann Example"
        );
        assert_eq!(
            u.check_password("ann", "wrong password!").unwrap_err(),
            (AuthError::Wrong, false)
        );
    }

    #[test]
    fn lockout_after_n_failures_until_reset() {
        let (_d, u) = users();
        u.add(
            "bob",
            "Bob",
            Role::Logistics,
            "a good long password",
            "t",
            1,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            u.check_password("bob", "x").unwrap_err().0,
            AuthError::Wrong
        );
        assert_eq!(
            u.check_password("bob", "y").unwrap_err().0,
            AuthError::Wrong
        );
        let third = u.check_password("bob", "z").unwrap_err();
        assert_eq!(third, (AuthError::Locked("bob".into()), true));
        // The right password no longer opens it.
        assert!(matches!(
            u.check_password("bob", "a good long password"),
            Err((AuthError::Locked(_), false))
        ));
        assert_eq!(u.stats.lockouts.load(Ordering::Relaxed), 1);
        assert_eq!(u.stats.password_failures.load(Ordering::Relaxed), 4);
        let r = u
            .set_password("bob", "temporary password 1", true)
            .unwrap()
            .unwrap();
        assert!(r.must_change_password && !r.locked);
        assert!(u.check_password("bob", "temporary password 1").is_ok());
    }

    #[test]
    fn a_disabled_account_is_not_revealed_to_a_wrong_guess() {
        let (_d, u) = users();
        u.add("eve", "Eve", Role::Viewer, "eve's long password", "t", 1)
            .unwrap()
            .unwrap();
        u.set_disabled("eve", true).unwrap();
        assert_eq!(
            u.check_password("eve", "a guess").unwrap_err().0,
            AuthError::Wrong
        );
        assert_eq!(
            u.check_password("eve", "eve's long password")
                .unwrap_err()
                .0,
            AuthError::Disabled("eve".into())
        );
        let (_, text) = u.mint_token("eve", "x", 2).unwrap();
        assert_eq!(
            u.by_token(&text).unwrap_err(),
            AuthError::Disabled("eve".into())
        );
    }

    #[test]
    fn tokens_carry_their_owner_and_can_be_revoked() {
        let (_d, u) = users();
        u.add(
            "cy",
            "Cy Fox",
            Role::Viewer,
            "another long password",
            "t",
            1,
        )
        .unwrap()
        .unwrap();
        let (rec, text) = u.mint_token("cy", "script", 5).unwrap();
        assert!(!rec.secret_sha256.contains(&text[text.len() - 10..]));
        assert_eq!(u.by_token(&text).unwrap().user, "cy");
        assert_eq!(
            u.by_token(&format!("{text}x")).unwrap_err(),
            AuthError::BadToken
        );
        u.revoke_token(&rec.id, 6).unwrap();
        assert_eq!(u.by_token(&text).unwrap_err(), AuthError::BadToken);
    }

    #[test]
    fn sessions_expire_when_idle() {
        let (_d, u) = users();
        u.add("di", "Di", Role::Viewer, "another long password", "t", 1)
            .unwrap()
            .unwrap();
        let (c, csrf) = u.start_session("di", 1_000).unwrap();
        assert_eq!(u.by_session(&c, 30_000, true).unwrap().unwrap().1, csrf);
        // 60 s idle timeout, counted from the last use by the person
        // (polling does not count).
        assert!(u.by_session(&c, 60_000, false).unwrap().is_some());
        assert!(u.by_session(&c, 89_000, true).unwrap().is_some());
        assert!(u.by_session(&c, 149_000, false).unwrap().is_none());
        // Read expired, it is gone from the store.
        assert_eq!(u.session_count().unwrap(), 0);
    }

    #[test]
    fn sessions_are_stored_under_a_hash_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::kv::Db::from(sled::open(dir.path()).unwrap());
        let u = Users::open(&db, 3, 900).unwrap();
        u.add("fay", "Fay", Role::Qa, "another long password", "t", 1)
            .unwrap()
            .unwrap();
        let (c, csrf) = u.start_session("fay", 1_000).unwrap();
        drop(u);
        let tree = db.open_tree("sessions").unwrap();
        let (k, v) = tree.first().unwrap().unwrap();
        assert_eq!(&k[..], sha256_hex(&c).as_bytes());
        let text = String::from_utf8_lossy(&v);
        assert!(!text.contains(&c), "the secret is not stored: {text}");
        // Reopened (a restart): the same session, the same CSRF token.
        let u = Users::open(&db, 3, 900).unwrap();
        let (a, t) = u.by_session(&c, 2_000, true).unwrap().unwrap();
        assert_eq!((a.user.as_str(), a.via, t), ("fay", Via::Session, csrf));
        assert!(
            u.by_session("not a session", 2_000, true)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn last_use_is_written_only_when_it_moved_by_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::kv::Db::from(sled::open(dir.path()).unwrap());
        let u = Users::open(&db, 3, 900).unwrap();
        u.add("gus", "Gus", Role::Viewer, "another long password", "t", 1)
            .unwrap()
            .unwrap();
        let (c, _) = u.start_session("gus", 0).unwrap();
        let stored = |u: &Users| -> Session {
            let (_, v) = u.sessions.first().unwrap().unwrap();
            serde_json::from_slice(&v).unwrap()
        };
        u.by_session(&c, 59_000, true).unwrap().unwrap();
        assert_eq!(stored(&u).last_ms, 0);
        u.by_session(&c, 61_000, false).unwrap().unwrap();
        assert_eq!(stored(&u).last_ms, 0, "polling does not count");
        u.by_session(&c, 61_000, true).unwrap().unwrap();
        assert_eq!((stored(&u).last_ms, stored(&u).created_ms), (61_000, 0));
    }

    #[test]
    fn password_reset_disable_and_lockout_end_the_sessions_and_the_sweep_purges() {
        let (_d, u) = users();
        for n in ["hal", "ivy"] {
            u.add(n, n, Role::Logistics, "another long password", "t", 1)
                .unwrap()
                .unwrap();
        }
        let (h1, _) = u.start_session("hal", 1_000).unwrap();
        let (h2, _) = u.start_session("hal", 1_000).unwrap();
        let (i1, _) = u.start_session("ivy", 1_000).unwrap();
        u.set_disabled("hal", true).unwrap();
        assert!(u.by_session(&h1, 2_000, true).unwrap().is_none());
        assert!(u.by_session(&h2, 2_000, true).unwrap().is_none());
        assert!(u.by_session(&i1, 2_000, true).unwrap().is_some());
        assert_eq!(u.session_count().unwrap(), 1);
        u.set_password("ivy", "a new long password", true)
            .unwrap()
            .unwrap();
        assert!(u.by_session(&i1, 2_000, true).unwrap().is_none());
        // Logout.
        let (i2, _) = u.start_session("ivy", 3_000).unwrap();
        u.end_session(&i2).unwrap();
        assert!(u.by_session(&i2, 3_000, true).unwrap().is_none());
        // Three wrong passwords lock ivy: her session ends.
        let (i3, _) = u.start_session("ivy", 3_000).unwrap();
        for _ in 0..3 {
            let _ = u.check_password("ivy", "wrong");
        }
        assert!(u.by_session(&i3, 3_000, true).unwrap().is_none());
        // The sweep removes what is idle for the timeout, nothing else.
        u.set_disabled("hal", false).unwrap();
        let (_old, _) = u.start_session("hal", 10_000).unwrap();
        let (young, _) = u.start_session("hal", 50_000).unwrap();
        assert_eq!(u.purge_expired_sessions(70_000).unwrap(), 1);
        assert_eq!(u.session_count().unwrap(), 1);
        assert!(u.by_session(&young, 70_000, true).unwrap().is_some());
    }
}
