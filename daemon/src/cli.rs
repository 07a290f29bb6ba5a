//! The `coldchain` command line: everything except `run` talks to the running
//! daemon through its HTTP API (sled allows one process per database).
//!
//! Exit codes scripts can rely on:
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | done |
//! | 1 | the daemon refused the request (4xx): the message says why |
//! | 2 | bad command line or config file |
//! | 3 | the daemon could not be reached, or failed (5xx) |
//! | 4 | a verification failed (`audit verify`, `report --verify`) |

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::config::Config;

/// How to reach the daemon: the flags of every subcommand that talks to it
/// (not of `run`, `check-config` and `import`, which take [`ConfigArg`] only).
/// Global within a command group, so `coldchain shipment create --api URL`
/// and `coldchain shipment --api URL create` both work.
#[derive(Debug, Clone, Default, Args)]
pub struct Conn {
    /// Daemon API base URL. Default: from --config's http.bind, else http://127.0.0.1:8080.
    #[arg(long, env = "COLDCHAIN_API", global = true)]
    pub api: Option<String>,
    /// Your personal API token (`coldchain token create`). Default: from
    /// --config's legacy http.token.
    #[arg(long, env = "COLDCHAIN_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// The daemon's config file, to find its API address and token.
    #[arg(long, short, env = "COLDCHAIN_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// PEM certificate to trust for the daemon's HTTPS (a local
    /// certificate made by deploy/install.sh). Default: from --config's
    /// http.tls_cert.
    #[arg(long, env = "COLDCHAIN_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The daemon's config file, for the subcommands that need only that.
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// The daemon's config file.
    #[arg(long, short, env = "COLDCHAIN_CONFIG")]
    pub config: Option<PathBuf>,
}

/// A failure with its exit code.
#[derive(Debug)]
pub struct Failure {
    /// Exit code (see the module docs).
    pub code: u8,
    /// What to tell the person.
    pub message: String,
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// Who is acting: `--by`, else $COLDCHAIN_USER, else $USER.
#[derive(Debug, Clone, Args)]
pub struct By {
    /// Who is making this change (recorded in the audit trail). Default: $COLDCHAIN_USER, else $USER.
    #[arg(long)]
    pub by: Option<String>,
}

impl By {
    fn get(&self) -> Result<String, Failure> {
        self.by
            .clone()
            .or_else(|| std::env::var("COLDCHAIN_USER").ok())
            .or_else(|| std::env::var("USER").ok())
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                fail(
                    2,
                    "say who is making this change: --by NAME (or set COLDCHAIN_USER)",
                )
            })
    }
}

/// CLI subcommands that talk to the daemon.
#[derive(Debug, Subcommand)]
pub enum ClientCmd {
    /// Active shipments at a glance: state, last temperature, min/max, window, alerts.
    Status {
        #[command(flatten)]
        conn: Conn,
    },
    /// Shipments: create, list, show, depart, eta, handoff, arrive, close.
    Shipment {
        #[command(subcommand)]
        cmd: ShipmentCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Alerts.
    Alerts {
        /// Only alerts not yet resolved.
        #[arg(long)]
        open: bool,
        /// Only this shipment's.
        #[arg(long)]
        shipment: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// QA: assess an alert's impact on the product (needed for each alert
    /// before a release can be signed).
    Assess {
        /// Alert id (from `coldchain alerts`).
        alert: u64,
        /// The assessment.
        #[arg(long)]
        comment: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// People: add (the first admin with the daemon stopped), list, disable,
    /// enable, reset.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Your personal API tokens: create (shown once), list, revoke.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Acknowledge an alert.
    Ack {
        /// Alert id (from `coldchain alerts`).
        alert: u64,
        /// What was done.
        #[arg(long)]
        comment: String,
        #[command(flatten)]
        by: By,
        #[command(flatten)]
        conn: Conn,
    },
    /// The arrival report of a shipment, or verify a saved copy.
    Report {
        /// Shipment id (not needed with --verify).
        shipment: Option<String>,
        /// html, csv, json or pdf (PDF/A; binary: give --out or redirect).
        #[arg(long, default_value = "html")]
        format: String,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Check a saved report against what the daemon has now.
        #[arg(long, conflicts_with = "out")]
        verify: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// The shipment's EPCIS 2.0 document (JSON-LD): hourly temperature
    /// summaries, alarm and error conditions, custody, arrival, disposition.
    Epcis {
        /// Shipment id.
        shipment: String,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Devices: add (mints a key unless given), list, reenroll.
    Device {
        #[command(subcommand)]
        cmd: DeviceCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Audit trail.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Back up the daemon's whole database as JSON lines (restore with
    /// `coldchain import`), or with --readings write every stored reading as
    /// one readable JSON line.
    Export {
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Readings only, one JSON object a line (device, enrollment, boot,
        /// seq, index, time, time source, channel, value or fault), not a backup.
        #[arg(long)]
        readings: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

impl ClientCmd {
    /// How to reach the daemon, as given to this subcommand.
    pub fn conn(&self) -> &Conn {
        match self {
            ClientCmd::Status { conn }
            | ClientCmd::Shipment { conn, .. }
            | ClientCmd::Alerts { conn, .. }
            | ClientCmd::Ack { conn, .. }
            | ClientCmd::Assess { conn, .. }
            | ClientCmd::User { conn, .. }
            | ClientCmd::Token { conn, .. }
            | ClientCmd::Report { conn, .. }
            | ClientCmd::Epcis { conn, .. }
            | ClientCmd::Device { conn, .. }
            | ClientCmd::Audit { conn, .. }
            | ClientCmd::Export { conn, .. } => conn,
        }
    }
}

/// `coldchain user ...`
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Add a person. The password is read from the terminal (or one line of
    /// standard input), never from the command line. With --config and the
    /// daemon stopped the database is opened directly: that is how the first
    /// admin is made on the gateway; while the daemon runs, through the API
    /// with an admin's token.
    Add {
        /// Login name: 1-32 of a-z 0-9 . _ -
        name: String,
        /// viewer, logistics, qa or admin.
        #[arg(long)]
        role: String,
        /// Full name, as their signature shows it.
        #[arg(long)]
        full_name: String,
    },
    /// List people.
    List,
    /// Disable an account (its sessions end; its tokens are refused).
    Disable {
        /// Login name.
        name: String,
    },
    /// Enable an account again.
    Enable {
        /// Login name.
        name: String,
    },
    /// Force a password reset: prints a temporary password once; the person
    /// must choose a new one at their next login. Unlocks a locked account.
    /// With --config and the daemon stopped, straight in the database (an
    /// admin who locked themselves out; also enables the account).
    Reset {
        /// Login name.
        name: String,
    },
}

/// `coldchain token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Mint a personal API token (printed once; only its hash is kept).
    Create {
        /// What it is for.
        #[arg(long)]
        label: String,
        /// Admins: mint it for this person instead.
        #[arg(long)]
        user: Option<String>,
        /// Log in as this person (password prompt) instead of using a token:
        /// how a person gets their first token.
        #[arg(long)]
        login: Option<String>,
    },
    /// List tokens (yours; an admin's: everyone's).
    List,
    /// Revoke a token by its id.
    Revoke {
        /// Token id (from `coldchain token list`).
        id: String,
    },
}

/// Reads a password: from the terminal without echo, else one line of
/// standard input (for scripts). Never from the command line.
pub fn read_password(prompt: &str) -> Result<String, Failure> {
    use std::io::IsTerminal;
    let pw = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt)
            .map_err(|e| fail(2, format!("reading the password: {e}")))?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| fail(2, format!("reading the password from standard input: {e}")))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if pw.is_empty() {
        return Err(fail(
            2,
            "no password given (type it, or pipe it on standard input)",
        ));
    }
    Ok(pw)
}

/// Adds a person straight into the database (the daemon stopped): the
/// first admin on the gateway. Recorded in the audit trail as made on the
/// command line by the operating-system user.
pub fn add_user_offline(
    cfg: &Config,
    name: &str,
    role: &str,
    full_name: &str,
    password: &str,
) -> Result<(), Failure> {
    use crate::store::Store;
    let role = crate::users::Role::parse(role).ok_or_else(|| {
        fail(
            2,
            format!("--role {role:?}: expected viewer, logistics, qa or admin"),
        )
    })?;
    let (store, users, audit) = open_offline(cfg)?;
    let os_user = command_line_identity();
    let now = now_ms();
    let u = users
        .add(
            name,
            full_name,
            role,
            password,
            &format!("command line ({})", os_user.full_name),
            now,
        )
        .map_err(|e| fail(3, format!("{e:#}")))?
        .map_err(|e| fail(1, e))?;
    audit
        .append_entry(
            now,
            "command-line",
            Some(os_user),
            "user.add",
            &u.name,
            json!({ "full_name": u.full_name, "role": u.role }),
        )
        .map_err(|e| fail(3, format!("{e:#}")))?;
    store.sync().map_err(|e| fail(3, e.to_string()))?;
    println!("added {} ({}), role {}", u.name, u.full_name, u.role.name());
    Ok(())
}

/// Opens the database on the gateway (the daemon stopped) with the accounts
/// and the audit trail; code 3 when it cannot (e.g. the daemon runs).
fn open_offline(
    cfg: &Config,
) -> Result<
    (
        crate::store::KvStore,
        crate::users::Users,
        crate::audit::Audit,
    ),
    Failure,
> {
    let dir = cfg.daemon.data_dir.join("db");
    let store = match &cfg.store.postgres_url {
        // Shared by design: the daemons may be running.
        Some(_) => crate::store::KvStore::open_configured(cfg)
            .map_err(|e| fail(3, format!("cannot open the database: {e}")))?,
        None => crate::store::KvStore::open(&dir).map_err(|e| {
            fail(
                3,
                format!(
                    "cannot open the database in {} ({e}): if the daemon is running, stop it, or pass --token of an admin to go through the API",
                    dir.display()
                ),
            )
        })?,
    };
    let users =
        crate::users::Users::open(store.db(), cfg.http.lockout_after, cfg.http.session_idle_s)
            .map_err(|e| fail(3, format!("{e:#}")))?;
    let audit = crate::audit::Audit::open(store.db()).map_err(|e| fail(3, e.to_string()))?;
    Ok((store, users, audit))
}

fn command_line_identity() -> crate::audit::AuditUser {
    let os_user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    crate::audit::AuditUser {
        id: "command-line".into(),
        full_name: format!("gateway command line, OS user {os_user}"),
        via: "database opened on the gateway".into(),
    }
}

/// An admin's reset on the gateway, the daemon stopped: a temporary
/// password printed once, the account unlocked and enabled.
pub fn reset_user_offline(cfg: &Config, name: &str) -> Result<(), Failure> {
    use crate::store::Store;
    let (store, users, audit) = open_offline(cfg)?;
    let mut bytes = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let temp = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    let u = users
        .set_password(name, &temp, true)
        .map_err(|e| fail(3, format!("{e:#}")))?
        .map_err(|e| fail(1, e))?;
    users
        .set_disabled(name, false)
        .map_err(|e| fail(3, format!("{e:#}")))?;
    let who = command_line_identity();
    audit
        .append_entry(
            now_ms(),
            &who.id.clone(),
            Some(who),
            "user.reset",
            &u.name,
            json!({ "unlocked": true, "enabled": true }),
        )
        .map_err(|e| fail(3, format!("{e:#}")))?;
    store.sync().map_err(|e| fail(3, e.to_string()))?;
    println!("temporary password for {} (shown once): {temp}", u.name);
    Ok(())
}

/// `coldchain shipment ...`
#[derive(Debug, Subcommand)]
pub enum ShipmentCmd {
    /// Create a shipment.
    Create {
        /// Shipment id (free text; an ISBT 128 DIN is fine).
        #[arg(long)]
        id: String,
        /// Product description.
        #[arg(long)]
        product: String,
        /// Profile: cryo-ln2, cryo-80, fridge, ambient, or one from the config.
        #[arg(long)]
        profile: String,
        /// Watching probe, DEVICE or DEVICE:CHANNEL (channel 0 by default); repeatable.
        #[arg(long = "device", required = true)]
        devices: Vec<String>,
        /// Where from.
        #[arg(long)]
        origin: String,
        /// Where to.
        #[arg(long)]
        destination: String,
        /// ISBT 128 donation identification number with flags and check
        /// character, e.g. "G1234 98 654321 00 H" (checked by the daemon).
        #[arg(long)]
        din: Option<String>,
        /// ISBT 128 product code, e.g. S1194 (shape checked).
        #[arg(long)]
        product_code: Option<String>,
        /// ETA: RFC 3339 time or +DURATION (e.g. +36h).
        #[arg(long)]
        eta: Option<String>,
        /// Collection time of the product (viability window start).
        #[arg(long)]
        collected: Option<String>,
        /// Nominal viability window, hours.
        #[arg(long)]
        window_h: Option<f64>,
        /// Departs now (or at this time): the shipment starts in transit.
        #[arg(long, num_args = 0..=1, default_missing_value = "now")]
        depart: Option<String>,
        #[command(flatten)]
        by: By,
    },
    /// List shipments (as `status`).
    List,
    /// Show one shipment.
    Show {
        /// Shipment id.
        id: String,
    },
    /// planned -> in transit.
    Depart {
        /// Shipment id.
        id: String,
        /// When (default now).
        #[arg(long)]
        at: Option<String>,
        #[command(flatten)]
        by: By,
    },
    /// Update the ETA.
    Eta {
        /// Shipment id.
        id: String,
        /// RFC 3339 time or +DURATION.
        eta: String,
        #[command(flatten)]
        by: By,
    },
    /// Record a custody hand-off.
    Handoff {
        /// Shipment id.
        id: String,
        /// Who takes custody.
        #[arg(long)]
        to: String,
        /// Where.
        #[arg(long)]
        location: String,
        /// When (default now).
        #[arg(long)]
        at: Option<String>,
        #[command(flatten)]
        by: By,
    },
    /// in transit -> arrived.
    Arrive {
        /// Shipment id.
        id: String,
        /// When (default now).
        #[arg(long)]
        at: Option<String>,
        #[command(flatten)]
        by: By,
    },
    /// arrived -> closed with your disposition.
    Close {
        /// Shipment id.
        id: String,
        /// accepted, quarantined or rejected.
        #[arg(long)]
        decision: String,
        /// Why.
        #[arg(long)]
        comment: String,
        #[command(flatten)]
        by: By,
    },
}

/// `coldchain device ...`
#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// Register a device; prints its key once when the daemon mints it.
    Add {
        /// Device id.
        id: String,
        /// 64 hex digits; minted when absent.
        #[arg(long)]
        key: Option<String>,
        /// Accept unsigned JSON from it (third-party devices only).
        #[arg(long)]
        allow_unsigned_json: bool,
        #[command(flatten)]
        by: By,
    },
    /// Registered and seen devices.
    List,
    /// Re-enroll a device whose flash was wiped or that was replaced under
    /// the same id: its new boots (from boot 1, seq 0 again) are stored after
    /// everything stored before, without a tamper alarm. Recorded in the
    /// audit trail with who and why.
    Reenroll {
        /// Device id.
        id: String,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: String,
        /// The device's new key, 64 hex digits (devices added with `device add` only).
        #[arg(long, conflicts_with = "new_key")]
        key: Option<String>,
        /// Mint a new key (printed once): frames signed with the old key are refused from now on.
        #[arg(long)]
        new_key: bool,
        #[command(flatten)]
        by: By,
    },
}

/// `coldchain audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Walk the hash chain; exit 4 if any entry was edited or deleted.
    Verify,
    /// List entries.
    List,
}

struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    fn new(c: &Conn) -> Result<Client, Failure> {
        let cfg = match &c.config {
            Some(p) => Some(Config::load(p).map_err(|e| fail(2, format!("{e:#}")))?),
            None => None,
        };
        let base = c
            .api
            .clone()
            .or_else(|| {
                cfg.as_ref().map(|cfg| {
                    let mut a = cfg.http.bind;
                    if a.ip().is_unspecified() {
                        a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                    }
                    let scheme = if cfg.http.tls() { "https" } else { "http" };
                    format!("{scheme}://{a}")
                })
            })
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let ca = c
            .ca_file
            .clone()
            .or_else(|| cfg.as_ref().and_then(|c| c.http.tls_cert.clone()));
        let token = c.token.clone().or_else(|| cfg.and_then(|c| c.http.token));
        let mut b = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)));
        if let Some(ca) = ca {
            let pem = std::fs::read(&ca)
                .map_err(|e| fail(2, format!("--ca-file {}: {e}", ca.display())))?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(fail(
                    2,
                    format!("--ca-file {}: no PEM certificate in it", ca.display()),
                ));
            }
            b = b.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)))
                    .build(),
            );
        }
        let agent = b.build().into();
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent,
        })
    }

    fn handle(
        &self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        what: &str,
    ) -> Result<String, Failure> {
        let mut resp = r.map_err(|e| {
            fail(
                3,
                format!("cannot reach the daemon at {} ({what}): {e}", self.base),
            )
        })?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(text);
        let code = if status >= 500 { 3 } else { 1 };
        Err(fail(code, format!("{what}: {status}: {msg}")))
    }

    fn get_text(&self, path: &str) -> Result<String, Failure> {
        let mut req = self.agent.get(&format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        self.handle(req.call(), &format!("GET {path}"))
    }

    /// GETs `path` and copies the body to `out` (or standard output) as it
    /// arrives, never holding it whole: exports can be larger than memory.
    fn stream_to(&self, path: &str, out: &Option<PathBuf>) -> Result<(), Failure> {
        use std::io::Write;
        let mut req = self.agent.get(&format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let what = format!("GET {path}");
        let mut resp = req.call().map_err(|e| {
            fail(
                3,
                format!("cannot reach the daemon at {} ({what}): {e}", self.base),
            )
        })?;
        if !resp.status().is_success() {
            return self.handle(Ok(resp), &what).map(drop);
        }
        let mut body = resp.body_mut().with_config().limit(u64::MAX).reader();
        let (mut sink, name): (Box<dyn Write>, String) = match out {
            Some(p) => (
                Box::new(std::io::BufWriter::new(std::fs::File::create(p).map_err(
                    |e| fail(2, format!("cannot write {}: {e}", p.display())),
                )?)),
                p.display().to_string(),
            ),
            None => (
                Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
                "standard output".into(),
            ),
        };
        std::io::copy(&mut body, &mut sink)
            .map_err(|e| fail(3, format!("{what}: copying to {name}: {e}")))?;
        sink.flush()
            .map_err(|e| fail(2, format!("cannot write {name}: {e}")))
    }

    fn get(&self, path: &str) -> Result<Value, Failure> {
        let t = self.get_text(path)?;
        serde_json::from_str(&t).map_err(|e| fail(3, format!("GET {path}: not JSON: {e}")))
    }

    fn post_file(&self, path: &str, body: &[u8]) -> Result<Value, Failure> {
        let mut req = self
            .agent
            .post(&format!("{}{path}", self.base))
            .header("Content-Type", "application/octet-stream");
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let t = self.handle(req.send(body), &format!("POST {path}"))?;
        serde_json::from_str(&t).map_err(|e| fail(3, format!("POST {path}: not JSON: {e}")))
    }

    /// Logs in as `name` and POSTs with that session (cookie and CSRF token).
    fn post_as(&self, name: &str, pw: &str, path: &str, body: &Value) -> Result<Value, Failure> {
        let what = "POST /api/v1/login";
        let resp = self
            .agent
            .post(&format!("{}/api/v1/login", self.base))
            .send_json(json!({ "name": name, "password": pw }))
            .map_err(|e| {
                fail(
                    3,
                    format!("cannot reach the daemon at {} ({what}): {e}", self.base),
                )
            })?;
        let cookie = resp
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_string);
        let t = self.handle(Ok(resp), what)?;
        let login: Value = serde_json::from_str(&t).unwrap_or_default();
        let (Some(cookie), Some(csrf)) = (cookie, login["csrf"].as_str()) else {
            return Err(fail(3, format!("{what}: no session in the answer")));
        };
        let t = self.handle(
            self.agent
                .post(&format!("{}{path}", self.base))
                .header("Cookie", &cookie)
                .header("X-CSRF-Token", csrf)
                .send_json(body),
            &format!("POST {path}"),
        )?;
        serde_json::from_str(&t).map_err(|e| fail(3, format!("POST {path}: not JSON: {e}")))
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        let mut req = self.agent.post(&format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let t = self.handle(req.send_json(body), &format!("POST {path}"))?;
        serde_json::from_str(&t).map_err(|e| fail(3, format!("POST {path}: not JSON: {e}")))
    }
}

/// Percent-encodes a path segment (shipment ids may hold spaces).
fn seg(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

fn now_ms() -> i64 {
    crate::ingest::now_ms()
}

/// Parses `now`, an RFC 3339 time, `+DURATION` (humantime, e.g. `+36h`) or ms since the epoch.
pub fn parse_time(s: &str) -> Result<i64, Failure> {
    let s = s.trim();
    if s == "now" {
        return Ok(now_ms());
    }
    if let Some(d) = s.strip_prefix('+') {
        let d = humantime::parse_duration(d).map_err(|e| fail(2, format!("time {s:?}: {e}")))?;
        return Ok(now_ms() + d.as_millis() as i64);
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        fail(
            2,
            format!("time {s:?}: {e}; expected RFC 3339 (2026-11-22T08:00:00Z), +DURATION or now"),
        )
    })?;
    Ok(t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0))
}

/// Formats ms since the epoch as RFC 3339 (UTC, seconds).
pub fn fmt_time(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
}

fn fmt_temp(v: &Value) -> String {
    v.as_i64()
        .map(|m| format!("{:.1}", m as f64 / 1000.0))
        .unwrap_or_else(|| "-".into())
}

fn fmt_dur(v: &Value) -> String {
    match v.as_i64() {
        None => "-".into(),
        Some(ms) if ms < 0 => format!("-{}", fmt_dur(&json!(-ms))),
        Some(ms) => {
            let m = ms / 60_000;
            if m >= 60 {
                format!("{}h{:02}m", m / 60, m % 60)
            } else {
                format!("{m}m")
            }
        }
    }
}

fn table(rows: &[Vec<String>], colours: &[Option<&str>]) {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (ri, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        let line = line.join("  ").trim_end().to_string();
        match colours.get(ri).copied().flatten() {
            Some(code) => println!("\x1b[{code}m{line}\x1b[0m"),
            None => println!("{line}"),
        }
    }
}

fn colour_enabled() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn write_out(out: &Option<PathBuf>, text: &str) -> Result<(), Failure> {
    match out {
        Some(p) => std::fs::write(p, text)
            .map_err(|e| fail(2, format!("cannot write {}: {e}", p.display()))),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

fn status(c: &Client, conn: &Conn) -> Result<(), Failure> {
    let list = c.get("/api/v1/shipments")?;
    if conn.json {
        print_json(&list);
        return Ok(());
    }
    let mut items: Vec<Value> = list.as_array().cloned().unwrap_or_default();
    let rank = |v: &Value| match v["worst_open"].as_str() {
        Some("critical") => 0,
        Some("warning") => 1,
        Some("info") => 2,
        _ => 3,
    };
    items.sort_by_key(|v| {
        (
            rank(v),
            v["window_remaining_ms"].as_i64().unwrap_or(i64::MAX),
        )
    });
    let mut rows = vec![vec![
        "SHIPMENT".to_string(),
        "STATE".into(),
        "PROFILE".into(),
        "LAST °C".into(),
        "MIN".into(),
        "MAX".into(),
        "WINDOW LEFT".into(),
        "AT ETA".into(),
        "ALERTS".into(),
    ]];
    let mut colours = vec![None];
    let on = colour_enabled();
    for v in &items {
        let open = v["open_alerts"].as_u64().unwrap_or(0);
        let unacked = v["unacknowledged"].as_u64().unwrap_or(0);
        rows.push(vec![
            v["shipment"]["id"]
                .as_str()
                .or(v["shipment"].as_str())
                .unwrap_or("?")
                .to_string(),
            v["state"].as_str().unwrap_or("?").to_string(),
            v["profile"].as_str().unwrap_or("?").to_string(),
            fmt_temp(&v["last"]["milli_c"]),
            fmt_temp(&v["min_milli_c"]),
            fmt_temp(&v["max_milli_c"]),
            fmt_dur(&v["window_remaining_ms"]),
            fmt_dur(&v["window_predicted_at_eta_ms"]),
            if open == 0 {
                "none".into()
            } else {
                format!(
                    "{open} ({unacked} unacked, worst {})",
                    v["worst_open"].as_str().unwrap_or("?")
                )
            },
        ]);
        colours.push(match (on, rank(v)) {
            (true, 0) => Some("1;31"),
            (true, 1) => Some("33"),
            _ => None,
        });
    }
    if items.is_empty() {
        println!("no shipments");
        return Ok(());
    }
    table(&rows, &colours);
    // Dry shippers warming towards their limit: the predicted crossing.
    for v in &items {
        if let Some(h) = v["hold_time"]["sentence"].as_str() {
            let id = v["shipment"]["id"].as_str().unwrap_or("?");
            let warn = if v["hold_time"]["warning"] == true {
                "WARNING: "
            } else {
                ""
            };
            println!("{id}: {warn}{h}");
        }
    }
    Ok(())
}

fn alerts_table(list: &Value) {
    let mut rows = vec![vec![
        "ID".to_string(),
        "SHIPMENT".into(),
        "SEVERITY".into(),
        "STATE".into(),
        "FIRED (device time)".into(),
        "WHAT".into(),
    ]];
    let mut colours = vec![None];
    let on = colour_enabled();
    for a in list.as_array().cloned().unwrap_or_default() {
        rows.push(vec![
            a["id"].to_string(),
            a["shipment"].as_str().unwrap_or("?").to_string(),
            a["severity"].as_str().unwrap_or("?").to_string(),
            a["state"].as_str().unwrap_or("?").to_string(),
            fmt_time(a["fires_ms"].as_i64().unwrap_or(0)),
            a["message"].as_str().unwrap_or("").to_string(),
        ]);
        colours.push(match (on, a["state"].as_str(), a["severity"].as_str()) {
            (true, Some("open"), Some("critical")) => Some("1;31"),
            (true, Some("open"), _) => Some("33"),
            _ => None,
        });
    }
    if rows.len() == 1 {
        println!("no alerts");
        return;
    }
    table(&rows, &colours);
}

fn user(c: &Client, conn: &Conn, cmd: UserCmd) -> Result<(), Failure> {
    let v = match cmd {
        UserCmd::Add {
            name,
            role,
            full_name,
        } => {
            let password = read_password(&format!("Password for {name}: "))?;
            // With --config and the daemon stopped, straight into the
            // database (the first admin); with the daemon running (its
            // database locked), through the API with a token.
            if let Some(path) = &conn.config {
                let cfg = Config::load(path).map_err(|e| fail(2, format!("{e:#}")))?;
                match add_user_offline(&cfg, &name, &role, &full_name, &password) {
                    Err(f) if f.code == 3 && c.token.is_some() => {}
                    r => return r,
                }
            } else if c.token.is_none() {
                return Err(fail(
                    2,
                    "no token: to add the first admin give --config (the daemon stopped), else --token of an admin",
                ));
            }
            c.post(
                "/api/v1/users",
                &json!({ "name": name, "role": role, "full_name": full_name, "password": password }),
            )?
        }
        UserCmd::List => c.get("/api/v1/users")?,
        UserCmd::Disable { name } => {
            c.post(&format!("/api/v1/users/{}/disable", seg(&name)), &json!({}))?
        }
        UserCmd::Enable { name } => {
            c.post(&format!("/api/v1/users/{}/enable", seg(&name)), &json!({}))?
        }
        UserCmd::Reset { name } => {
            if let Some(path) = &conn.config {
                let cfg = Config::load(path).map_err(|e| fail(2, format!("{e:#}")))?;
                match reset_user_offline(&cfg, &name) {
                    Err(f) if f.code == 3 && c.token.is_some() => {}
                    r => return r,
                }
            }
            c.post(&format!("/api/v1/users/{}/reset", seg(&name)), &json!({}))?
        }
    };
    if conn.json {
        print_json(&v);
    } else if let Some(list) = v.as_array() {
        let mut rows = vec![vec![
            "NAME".into(),
            "FULL NAME".into(),
            "ROLE".into(),
            "STATE".into(),
        ]];
        for u in list {
            let state = if u["disabled"] == true {
                "disabled"
            } else if u["locked"] == true {
                "locked"
            } else if u["must_change_password"] == true {
                "must change password"
            } else {
                "active"
            };
            rows.push(vec![
                u["name"].as_str().unwrap_or("").into(),
                u["full_name"].as_str().unwrap_or("").into(),
                u["role"].as_str().unwrap_or("").into(),
                state.into(),
            ]);
        }
        table(&rows, &[]);
    } else if let Some(pw) = v["temporary_password"].as_str() {
        println!(
            "temporary password for {} (shown once): {pw}",
            v["user"].as_str().unwrap_or("?")
        );
    } else {
        print_json(&v);
    }
    Ok(())
}

fn token(c: &Client, conn: &Conn, cmd: TokenCmd) -> Result<(), Failure> {
    let v = match cmd {
        TokenCmd::Create { label, user, login } => {
            let body = json!({ "label": label, "user": user });
            let v = match login {
                Some(name) => {
                    let pw = read_password(&format!("Password for {name}: "))?;
                    c.post_as(&name, &pw, "/api/v1/tokens", &body)?
                }
                None => c.post("/api/v1/tokens", &body)?,
            };
            if !conn.json {
                println!("{}", v["token"].as_str().unwrap_or(""));
                eprintln!(
                    "token {} for {}: shown once, keep it secret (COLDCHAIN_TOKEN or --token)",
                    v["id"].as_str().unwrap_or("?"),
                    v["user"].as_str().unwrap_or("?")
                );
                return Ok(());
            }
            v
        }
        TokenCmd::List => c.get("/api/v1/tokens")?,
        TokenCmd::Revoke { id } => {
            c.post(&format!("/api/v1/tokens/{}/revoke", seg(&id)), &json!({}))?
        }
    };
    print_json(&v);
    Ok(())
}

/// Runs a client subcommand.
pub fn run(cmd: ClientCmd) -> Result<(), Failure> {
    let conn = &cmd.conn().clone();
    let c = Client::new(conn)?;
    match cmd {
        ClientCmd::Status { .. }
        | ClientCmd::Shipment {
            cmd: ShipmentCmd::List,
            ..
        } => status(&c, conn),
        ClientCmd::Shipment { cmd: s, .. } => shipment(&c, conn, s),
        ClientCmd::Alerts { open, shipment, .. } => {
            let mut q = format!("/api/v1/alerts?open={open}");
            if let Some(s) = shipment {
                q.push_str(&format!("&shipment={}", seg(&s)));
            }
            let v = c.get(&q)?;
            if conn.json {
                print_json(&v);
            } else {
                alerts_table(&v);
            }
            Ok(())
        }
        ClientCmd::Assess { alert, comment, .. } => {
            let v = c.post(
                &format!("/api/v1/alerts/{alert}/assess"),
                &json!({ "comment": comment }),
            )?;
            if conn.json {
                print_json(&v);
            } else {
                println!(
                    "alert {alert} assessed by {}",
                    v["full_name"].as_str().unwrap_or("?")
                );
            }
            Ok(())
        }
        ClientCmd::User { cmd, .. } => user(&c, conn, cmd),
        ClientCmd::Token { cmd, .. } => token(&c, conn, cmd),
        ClientCmd::Ack {
            alert, comment, by, ..
        } => {
            let v = c.post(
                &format!("/api/v1/alerts/{alert}/ack"),
                &json!({ "by": by.get()?, "comment": comment }),
            )?;
            if conn.json {
                print_json(&v);
            } else {
                println!(
                    "alert {alert} {}",
                    v["state"].as_str().unwrap_or("acknowledged")
                );
            }
            Ok(())
        }
        ClientCmd::Report {
            shipment,
            format,
            out,
            verify,
            ..
        } => {
            if let Some(file) = verify {
                let bytes = std::fs::read(&file)
                    .map_err(|e| fail(2, format!("cannot read {}: {e}", file.display())))?;
                let v = c.post_file("/api/v1/reports/verify", &bytes)?;
                if conn.json {
                    print_json(&v);
                } else if v["ok"] == json!(true) {
                    println!(
                        "{}: matches the daemon's data for shipment {} (sha256 {})",
                        file.display(),
                        v["shipment"].as_str().unwrap_or("?"),
                        v["sha256_now"].as_str().unwrap_or("?")
                    );
                } else {
                    println!("{}: DOES NOT MATCH", file.display());
                    for p in v["problems"].as_array().cloned().unwrap_or_default() {
                        println!("  {}", p.as_str().unwrap_or(""));
                    }
                }
                return if v["ok"] == json!(true) {
                    Ok(())
                } else {
                    Err(fail(
                        4,
                        format!("{}: does not match the daemon's data", file.display()),
                    ))
                };
            }
            let id =
                shipment.ok_or_else(|| fail(2, "which shipment? coldchain report SHIPMENT"))?;
            if format.eq_ignore_ascii_case("pdf") {
                if out.is_none() && std::io::stdout().is_terminal() {
                    return Err(fail(2, "--format pdf: give --out FILE (a PDF is binary)"));
                }
                let path = format!("/api/v1/shipments/{}/report?format=pdf", seg(&id));
                return c.stream_to(&path, &out);
            }
            let text = c.get_text(&format!(
                "/api/v1/shipments/{}/report?format={}",
                seg(&id),
                seg(&format)
            ))?;
            write_out(&out, &text)
        }
        ClientCmd::Epcis { shipment, out, .. } => {
            let text = c.get_text(&format!("/api/v1/shipments/{}/epcis", seg(&shipment)))?;
            write_out(&out, &text)
        }
        ClientCmd::Device {
            cmd:
                DeviceCmd::Add {
                    id,
                    key,
                    allow_unsigned_json,
                    by,
                },
            ..
        } => {
            let mut body =
                json!({ "by": by.get()?, "id": id, "allow_unsigned_json": allow_unsigned_json });
            if let Some(k) = key {
                body["key"] = json!(k);
            }
            let v = c.post("/api/v1/devices", &body)?;
            if conn.json {
                print_json(&v);
            } else {
                println!(
                    "device {id} registered (key fingerprint {})",
                    v["key_fingerprint"].as_str().unwrap_or("?")
                );
                if let Some(k) = v["key"].as_str() {
                    println!("key (shown once; put it on the device): {k}");
                }
            }
            Ok(())
        }
        ClientCmd::Device {
            cmd:
                DeviceCmd::Reenroll {
                    id,
                    reason,
                    key,
                    new_key,
                    by,
                },
            ..
        } => {
            let mut body = json!({ "by": by.get()?, "reason": reason, "new_key": new_key });
            if let Some(k) = key {
                body["key"] = json!(k);
            }
            let v = c.post(&format!("/api/v1/devices/{}/reenroll", seg(&id)), &body)?;
            if conn.json {
                print_json(&v);
            } else {
                println!(
                    "device {id} re-enrolled (enrollment {}, its boots stored from {} on, key fingerprint {})",
                    v["number"],
                    v["boot_offset"].as_u64().unwrap_or(0) + 1,
                    v["key_fingerprint"].as_str().unwrap_or("?")
                );
                if let Some(k) = v["key"].as_str() {
                    println!("key (shown once; put it on the device): {k}");
                }
            }
            Ok(())
        }
        ClientCmd::Device {
            cmd: DeviceCmd::List,
            ..
        } => {
            let v = c.get("/api/v1/devices")?;
            if conn.json {
                print_json(&v);
                return Ok(());
            }
            let mut rows = vec![vec![
                "DEVICE".to_string(),
                "REGISTERED".into(),
                "READINGS".into(),
                "BOOT".into(),
                "LAST SEEN".into(),
            ]];
            for d in v.as_array().cloned().unwrap_or_default() {
                rows.push(vec![
                    d["id"].as_str().unwrap_or("?").to_string(),
                    d["registered"].to_string(),
                    d["readings"].to_string(),
                    d["boot"].to_string(),
                    fmt_time(d["last_seen_ms"].as_i64().unwrap_or(0)),
                ]);
            }
            table(&rows, &[]);
            Ok(())
        }
        ClientCmd::Audit {
            cmd: AuditCmd::Verify,
            ..
        } => {
            let v = c.get("/api/v1/audit/verify")?;
            if conn.json {
                print_json(&v);
            } else if v["ok"] == json!(true) {
                println!(
                    "audit trail intact: {} entries, head {}",
                    v["entries"],
                    v["head"].as_str().unwrap_or("?")
                );
            } else {
                println!("AUDIT TRAIL BROKEN ({} entries checked):", v["entries"]);
                for p in v["problems"].as_array().cloned().unwrap_or_default() {
                    println!("  {}", p.as_str().unwrap_or(""));
                }
            }
            if v["ok"] == json!(true) {
                Ok(())
            } else {
                Err(fail(4, "audit trail verification failed"))
            }
        }
        ClientCmd::Audit {
            cmd: AuditCmd::List,
            ..
        } => {
            let v = c.get("/api/v1/audit?limit=10000")?;
            if conn.json {
                print_json(&v);
                return Ok(());
            }
            let mut rows = vec![vec![
                "SEQ".to_string(),
                "WHEN".into(),
                "WHO".into(),
                "ACTION".into(),
                "SUBJECT".into(),
            ]];
            for e in v.as_array().cloned().unwrap_or_default() {
                // An authenticated person: "id (Full Name)"; an entry from
                // before accounts: the typed name, marked as such.
                let who = match (e["user"]["id"].as_str(), e["user"]["full_name"].as_str()) {
                    (Some(id), Some(full)) => format!("{id} ({full})"),
                    _ if e["identity"] == "legacy typed name" => {
                        format!("{} [legacy typed name]", e["who"].as_str().unwrap_or(""))
                    }
                    _ => e["who"].as_str().unwrap_or("").into(),
                };
                rows.push(vec![
                    e["seq"].to_string(),
                    fmt_time(e["at_ms"].as_i64().unwrap_or(0)),
                    who,
                    e["action"].as_str().unwrap_or("").into(),
                    e["subject"].as_str().unwrap_or("").into(),
                ]);
            }
            table(&rows, &[]);
            Ok(())
        }
        ClientCmd::Export { out, readings, .. } => {
            let path = if readings {
                "/api/v1/export?readings=true"
            } else {
                "/api/v1/export"
            };
            c.stream_to(path, &out)
        }
    }
}

fn shipment(c: &Client, conn: &Conn, s: ShipmentCmd) -> Result<(), Failure> {
    let (path, body) = match s {
        ShipmentCmd::Create {
            id,
            product,
            profile,
            devices,
            origin,
            destination,
            din,
            product_code,
            eta,
            collected,
            window_h,
            depart,
            by,
        } => {
            let mut watch = Vec::new();
            for d in devices {
                let (dev, ch) = match d.split_once(':') {
                    Some((dev, ch)) => (
                        dev.to_string(),
                        ch.parse::<u8>()
                            .map_err(|_| fail(2, format!("--device {d}: channel must be 0-255")))?,
                    ),
                    None => (d, 0),
                };
                watch.push(json!({ "device": dev, "channel": ch }));
            }
            let mut b = json!({ "by": by.get()?, "id": id, "product": product, "profile": profile, "watch": watch,
                "origin": origin, "destination": destination });
            if let Some(x) = din {
                b["din"] = json!(x);
            }
            if let Some(x) = product_code {
                b["product_code"] = json!(x);
            }
            if let Some(x) = eta {
                b["eta_ms"] = json!(parse_time(&x)?);
            }
            if let Some(x) = collected {
                b["collection_ms"] = json!(parse_time(&x)?);
            }
            if let Some(x) = window_h {
                b["window_h"] = json!(x);
            }
            if let Some(x) = depart {
                b["departure_ms"] = json!(parse_time(&x)?);
            }
            ("/api/v1/shipments".to_string(), b)
        }
        ShipmentCmd::Show { id } => {
            let v = c.get(&format!("/api/v1/shipments/{}", seg(&id)))?;
            if conn.json {
                print_json(&v);
                return Ok(());
            }
            let sh = &v["evaluation"]["shipment"];
            let st = &v["status"];
            println!(
                "{}  {}  ({})",
                sh["id"].as_str().unwrap_or("?"),
                sh["state"].as_str().unwrap_or("?"),
                sh["profile"].as_str().unwrap_or("?")
            );
            println!("  product      {}", sh["product"].as_str().unwrap_or(""));
            println!(
                "  route        {} -> {}",
                sh["origin"].as_str().unwrap_or(""),
                sh["destination"].as_str().unwrap_or("")
            );
            println!(
                "  departed     {}",
                fmt_time(sh["departure_ms"].as_i64().unwrap_or(0))
            );
            println!(
                "  eta          {}",
                fmt_time(sh["eta_ms"].as_i64().unwrap_or(0))
            );
            println!(
                "  arrived      {}",
                fmt_time(sh["arrived_ms"].as_i64().unwrap_or(0))
            );
            println!(
                "  last         {} °C at {}",
                fmt_temp(&st["last"]["milli_c"]),
                fmt_time(st["last"]["t_ms"].as_i64().unwrap_or(0))
            );
            println!(
                "  min / max    {} / {} °C",
                fmt_temp(&st["min_milli_c"]),
                fmt_temp(&st["max_milli_c"])
            );
            println!(
                "  window left  {} (at ETA: {})",
                fmt_dur(&st["window_remaining_ms"]),
                fmt_dur(&st["window_predicted_at_eta_ms"])
            );
            for h in sh["handoffs"].as_array().cloned().unwrap_or_default() {
                println!(
                    "  hand-off     {} to {} at {}",
                    fmt_time(h["at_ms"].as_i64().unwrap_or(0)),
                    h["to"].as_str().unwrap_or(""),
                    h["location"].as_str().unwrap_or("")
                );
            }
            println!();
            alerts_table(&v["alerts"]);
            return Ok(());
        }
        ShipmentCmd::Depart { id, at, by } => (
            format!("/api/v1/shipments/{}/depart", seg(&id)),
            json!({ "by": by.get()?, "at_ms": at.map(|a| parse_time(&a)).transpose()? }),
        ),
        ShipmentCmd::Eta { id, eta, by } => (
            format!("/api/v1/shipments/{}/eta", seg(&id)),
            json!({ "by": by.get()?, "eta_ms": parse_time(&eta)? }),
        ),
        ShipmentCmd::Handoff {
            id,
            to,
            location,
            at,
            by,
        } => (
            format!("/api/v1/shipments/{}/handoff", seg(&id)),
            json!({ "by": by.get()?, "to": to, "location": location, "at_ms": at.map(|a| parse_time(&a)).transpose()? }),
        ),
        ShipmentCmd::Arrive { id, at, by } => (
            format!("/api/v1/shipments/{}/arrive", seg(&id)),
            json!({ "by": by.get()?, "at_ms": at.map(|a| parse_time(&a)).transpose()? }),
        ),
        ShipmentCmd::Close {
            id,
            decision,
            comment,
            by: _,
        } => {
            // Closing is an electronic signature: the password again.
            let password = read_password(&format!(
                "Password to sign the {decision} disposition of {id}: "
            ))?;
            (
                format!("/api/v1/shipments/{}/close", seg(&id)),
                json!({ "decision": decision, "comment": comment, "password": password }),
            )
        }
        ShipmentCmd::List => unreachable!("handled by status"),
    };
    let v = c.post(&path, &body)?;
    if conn.json {
        print_json(&v);
    } else {
        println!(
            "shipment {}: {}",
            v["id"].as_str().unwrap_or("?"),
            v["state"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_documented_form() {
        assert_eq!(parse_time("1763769600000").unwrap(), 1_763_769_600_000);
        assert_eq!(
            parse_time("2025-11-22T00:00:00Z").unwrap(),
            1_763_769_600_000
        );
        let rel = parse_time("+2h").unwrap() - now_ms();
        assert!((7_199_000..=7_201_000).contains(&rel));
        let e = parse_time("tomorrow").unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.message.contains("RFC 3339"));
        assert_eq!(fmt_time(1_763_769_600_000), "2025-11-22T00:00:00Z");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("W1234 25 000001"), "W1234%2025%20000001");
        assert_eq!(seg("a/b?c"), "a%2Fb%3Fc");
    }
}
