//! The daemon's TOML configuration.
//!
//! Every section and key has a documented default (see
//! `deploy/coldchain.example.toml`); unknown keys are refused so a typo is an
//! error, not a silently ignored setting. Errors name the file, the key and
//! what was expected.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use coldchain_proto::{DeviceId, DeviceKey};
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// SHA-256 of the file's text, hex (set by [`Config::load`]); recorded in
    /// the audit trail when it changes.
    #[serde(skip)]
    pub source_sha256: Option<String>,
    /// `[daemon]`
    #[serde(default)]
    pub daemon: DaemonSection,
    /// `[mqtt]`
    #[serde(default)]
    pub mqtt: MqttSection,
    /// `[store]`
    #[serde(default)]
    pub store: StoreSection,
    /// `[http]`
    #[serde(default)]
    pub http: HttpSection,
    /// `[[devices]]`
    #[serde(default)]
    pub devices: Vec<DeviceEntry>,
    /// `[[serial]]`
    #[serde(default)]
    pub serial: Vec<SerialPort>,
    /// `[alerts]`
    #[serde(default)]
    pub alerts: AlertsSection,
    /// `[[webhooks]]`
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
    /// `[upstream]`: forward to a central broker (off when absent).
    #[serde(default)]
    pub upstream: Option<Upstream>,
    /// `[centre]`: this daemon is a centre: it also ingests what gateways
    /// forward (off when absent; see [`crate::sites`]).
    #[serde(default)]
    pub centre: Option<Centre>,
    /// `[[profiles]]`: custom profiles, or overrides of the built-in ones by name.
    #[serde(default)]
    pub profiles: Vec<crate::profile::Profile>,
}

/// `[alerts]`: evaluation and escalation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSection {
    /// Escalate an alert nobody has acknowledged after this many seconds, and
    /// again after each further such period. Default 900.
    pub escalate_after_s: u64,
    /// Temperature zones are ignored this long after departure. Default 600.
    pub settle_s: u64,
    /// A reading stands for at most this long; longer gaps are unknown time. Default 1800.
    pub max_gap_s: u64,
    /// Sampling interval assumed for the silence alarm, seconds. Default 60.
    pub sample_interval_s: u64,
    /// Seconds between evaluations of a shipment with new data. Default 1.
    pub evaluate_every_s: u64,
    /// Dry shippers: warn when the predicted crossing of the limit, minus
    /// its band, comes before the ETA plus this many seconds. Default 7200.
    pub hold_time_margin_s: u64,
    /// A dry shipper whose warming rate exceeds this many times the mean
    /// of its first 3 shipments is flagged in its history. Default 1.5.
    pub shipper_rate_factor: f64,
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            escalate_after_s: 900,
            settle_s: 600,
            max_gap_s: 1800,
            sample_interval_s: 60,
            evaluate_every_s: 1,
            hold_time_margin_s: 7200,
            shipper_rate_factor: 1.5,
        }
    }
}

/// `[upstream]`: the central broker verified data is forwarded to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Broker host.
    pub host: String,
    /// Broker port. Default 1883.
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// Topic prefix. Default `coldchain/v1/edge/{daemon.id}`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Username.
    #[serde(default)]
    pub username: Option<String>,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// CA of the upstream broker's certificate; enables TLS.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The sites this gateway serves: of the shipments the centre publishes
    /// it takes those whose origin or destination is one of them (and those
    /// it already has). Empty (the default): every shipment.
    #[serde(default)]
    pub sites: Vec<String>,
    /// The `centre.group` of the centre that consumes what is forwarded:
    /// after each connection, nothing is forwarded until that centre has
    /// said it is subscribed (`coldchain/v1/fleet/centre/{group}/ready`).
    /// A broker that restarted without the centre's shared subscriptions
    /// (Mosquitto 2.0 does not restore them) would otherwise acknowledge
    /// and drop what the gateway sends. Unset (the default): forward as
    /// soon as connected (a consumer other than a Coldchain centre).
    #[serde(default)]
    pub centre_group: Option<String>,
}

/// `[centre]`: the daemon ingests, besides devices' own topics, what
/// gateways forward to its broker, through MQTT shared subscriptions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Centre {
    /// Shared-subscription group: every subscription is
    /// `$share/{group}/...`, so the instances of a centre split the stream.
    /// Default `coldchain-centre`.
    pub group: String,
    /// The topic root gateways forward under: a gateway's `upstream.prefix`
    /// is `{edges}/{gateway id}`. Default `coldchain/v1/edge` (the default
    /// prefix is `coldchain/v1/edge/{daemon.id}`).
    pub edges: String,
}

impl Default for Centre {
    fn default() -> Self {
        Centre {
            group: "coldchain-centre".into(),
            edges: "coldchain/v1/edge".into(),
        }
    }
}

fn default_mqtt_port() -> u16 {
    1883
}

/// `[[webhooks]]`: where alert events are POSTed, signed as Standard
/// Webhooks (<https://www.standardwebhooks.com/>) prescribe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// URL (http or https).
    pub url: String,
    /// The signing secret: `whsec_` and the base64 of 24 to 64 random bytes
    /// (the Standard Webhooks form; `openssl rand -base64 32`), or, as
    /// earlier versions took it, any text of at least 16 characters, whose
    /// UTF-8 bytes are then the key (a Standard Webhooks library wants it
    /// as `whsec_` + base64 of that text).
    pub secret: String,
}

impl Webhook {
    /// The HMAC key: the decoded bytes of a `whsec_` secret, else the
    /// secret's own bytes. `i` names the table in errors.
    pub fn signing_key(&self, i: usize) -> anyhow::Result<Vec<u8>> {
        use base64::Engine;
        match self.secret.strip_prefix("whsec_") {
            Some(b64) => {
                let key = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "key webhooks[{i}].secret: after whsec_ expected standard base64 ({e})"
                        )
                    })?;
                if !(24..=64).contains(&key.len()) {
                    bail!(
                        "key webhooks[{i}].secret: whsec_ secret of {} bytes, expected 24 to 64 (openssl rand -base64 32)",
                        key.len()
                    );
                }
                Ok(key)
            }
            None if self.secret.len() < 16 => {
                bail!("key webhooks[{i}].secret: expected whsec_<base64> or at least 16 characters")
            }
            None => Ok(self.secret.as_bytes().to_vec()),
        }
    }
}

/// `[[serial]]`: a serial port a logger or a docked device talks on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialPort {
    /// Device path, e.g. `/dev/ttyUSB0`.
    pub path: String,
    /// Baud rate. Default 115200.
    #[serde(default = "default_baud")]
    pub baud: u32,
}

fn default_baud() -> u32 {
    115_200
}

/// `[daemon]`: identity, state directory, logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSection {
    /// Name of this gateway, used in the online topic and as MQTT client id suffix.
    pub id: String,
    /// Where the database lives. Default `/var/lib/coldchain`.
    pub data_dir: PathBuf,
    /// `human` (default) or `json`.
    pub log_format: LogFormat,
    /// Seconds between refreshes of the retained time-and-settings message on
    /// each device's down topic. Default 60.
    pub time_refresh_s: u64,
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            id: "edge".into(),
            data_dir: PathBuf::from("/var/lib/coldchain"),
            log_format: LogFormat::Human,
            time_refresh_s: 60,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// `[mqtt]`: the broker the devices publish to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    /// Broker host. Default `127.0.0.1`.
    pub host: String,
    /// Broker port. Default 1883 (8883 is usual with TLS).
    pub port: u16,
    /// Fixed client id, so the broker keeps our session (and the messages
    /// queued for us) across restarts. Default `coldchain-{daemon.id}`.
    pub client_id: Option<String>,
    /// Username, if the broker requires one.
    pub username: Option<String>,
    /// Password, if the broker requires one.
    pub password: Option<String>,
    /// PEM file of the CA that signed the broker's certificate; enables TLS.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with `client_key_file`).
    pub client_cert_file: Option<PathBuf>,
    /// PEM client key for mutual TLS.
    pub client_key_file: Option<PathBuf>,
    /// Keep-alive, seconds. Default 30.
    pub keep_alive_s: u64,
    /// First reconnect delay, milliseconds. Default 250.
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay, milliseconds. Default 30000.
    pub reconnect_max_ms: u64,
}

impl Default for MqttSection {
    fn default() -> Self {
        MqttSection {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: None,
            username: None,
            password: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            keep_alive_s: 30,
            reconnect_min_ms: 250,
            reconnect_max_ms: 30_000,
        }
    }
}

/// `[store]`: durability and group commit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Most messages made durable by one flush+fsync. Default 4096.
    pub max_batch: usize,
    /// Messages buffered between the MQTT task and the store. Default 8192.
    pub queue: usize,
    /// Disk budget of the database, MiB; 0 for none. Default 0. When the
    /// database is larger, the daemon stops taking new data (it does not
    /// acknowledge it, so the broker and the devices keep it), reports not
    /// ready on `/readyz`, sets `coldchain_storage_full`, logs an error and
    /// raises a critical `storage_full` alert on every shipment in transit,
    /// until space is made (export, then move the data away, or set
    /// `retention_days`). Intake resumes under 90 % of the budget; sled does
    /// not shrink its file after deletes, so the daemon compacts the
    /// database at start when it is over that, and while running when
    /// retention purged data while intake was paused (daemon/DESIGN.md,
    /// "Storage").
    pub max_disk_mb: u64,
    /// Device data received more than this many days ago is purged (hourly),
    /// except data a shipment not closed, or closed within this period, may
    /// still need; shipments, alerts, the audit trail and undelivered or
    /// unforwarded items are never purged. A shipment closed before the
    /// period has its retained status and fleet record cleared from the
    /// brokers, once. 0 keeps everything. Default 0.
    pub retention_days: u32,
    /// sled's page cache, MiB. Default 16. The daemon's memory grows with it
    /// (sled's own default, 1 GiB, would take most of an edge box); reads of
    /// older data come from disk instead.
    pub cache_mb: u64,
    /// PostgreSQL instead of sled (a centre: several daemons share one
    /// database), as a libpq URL, e.g.
    /// `postgres://coldchain@db.example/coldchain`. The password is better
    /// kept out of this file (`~/.pgpass` is not read; use a `password=`
    /// from a root-only configuration, or trust/peer authentication on a
    /// socket). Unset: sled in `daemon.data_dir/db`.
    pub postgres_url: Option<String>,
    /// Connections to PostgreSQL. Default 8.
    pub postgres_pool: usize,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            max_batch: 4096,
            queue: 8192,
            max_disk_mb: 0,
            retention_days: 0,
            cache_mb: 16,
            postgres_url: None,
            postgres_pool: 8,
        }
    }
}

/// `[http]`: the API and dashboard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Listen address. Default `127.0.0.1:8080`; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Legacy shared bearer token: accepted as one audited admin identity
    /// (`legacy-token`) so existing scripts keep working until they move to
    /// personal tokens (`coldchain token create`). It cannot sign.
    pub token: Option<String>,
    /// PEM certificate chain: with `tls_key`, the daemon serves HTTPS
    /// (reloaded on SIGHUP).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address beyond loopback (passwords and
    /// sessions then cross the network in clear). Default false: refused.
    pub allow_plain_http: bool,
    /// Whether reads need no login. Default: true on a loopback address
    /// (a person on the gateway itself), false beyond it.
    pub anonymous_reads: Option<bool>,
    /// Wrong passwords in a row before an account locks (default 5).
    pub lockout_after: u32,
    /// A dashboard session ends after this long without a request (default 900 s).
    pub session_idle_s: u64,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            tls_cert: None,
            tls_key: None,
            allow_plain_http: false,
            anonymous_reads: None,
            lockout_after: 5,
            session_idle_s: 900,
        }
    }
}

impl HttpSection {
    /// Whether HTTPS is configured.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// Whether reads need no login.
    pub fn anonymous_reads(&self) -> bool {
        self.anonymous_reads
            .unwrap_or_else(|| self.bind.ip().is_loopback())
    }
}

/// `[[devices]]`: a device allowed to send data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceEntry {
    /// Device id, as in its topics and frames.
    pub id: String,
    /// 64 hex digits: the device's HMAC key.
    pub key: String,
    /// Accept unsigned JSON frames from this device (third-party devices
    /// that cannot sign, behind broker TLS and ACLs). Default false.
    #[serde(default)]
    pub allow_unsigned_json: bool,
    /// Settings pushed to the device with the time (`[devices.settings]`).
    #[serde(default)]
    pub settings: Option<coldchain_proto::Settings>,
    /// Calibration certificates of its channels (`[[devices.calibration]]`).
    #[serde(default)]
    pub calibration: Vec<CalibrationEntry>,
}

/// `[[devices.calibration]]`: the calibration certificate of one channel.
/// Readings stay stored as measured; evaluation corrects them
/// (`coldchain_engine::calibration`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationEntry {
    /// The channel it calibrates.
    pub channel: u8,
    /// The certificate's id.
    pub certificate: String,
    /// Calibration date, `YYYY-MM-DD`.
    pub date: String,
    /// Next calibration due, `YYYY-MM-DD` (valid to the end of that day, UTC).
    pub due: String,
    /// Correction: corrected = measured + offset, °C. Or `two_point`.
    #[serde(default)]
    pub offset: Option<f64>,
    /// Correction: the line through two points, °C.
    #[serde(default)]
    pub two_point: Option<TwoPointEntry>,
    /// Uncertainty the certificate states for corrected values, °C.
    pub uncertainty: f64,
    /// IEC 60751 class of the element: `AA`, `A` or `B`.
    #[serde(default)]
    pub class: Option<coldchain_engine::calibration::Class>,
}

/// `two_point = { measured = [a, b], reference = [a, b] }`, °C.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwoPointEntry {
    /// What the probe read at the two points.
    pub measured: [f64; 2],
    /// The reference temperatures there.
    pub reference: [f64; 2],
}

impl CalibrationEntry {
    /// The certificate, checked.
    pub fn certificate(&self) -> anyhow::Result<coldchain_engine::calibration::Certificate> {
        use coldchain_engine::calibration::{Certificate, Correction, parse_date};
        let correction = match (&self.offset, &self.two_point) {
            (Some(o), None) => Correction::Offset(*o),
            (None, Some(t)) => Correction::TwoPoint {
                measured: t.measured,
                reference: t.reference,
            },
            _ => bail!("expected exactly one of offset or two_point"),
        };
        if self.certificate.trim().is_empty() {
            bail!("certificate: expected the certificate's id");
        }
        let c = Certificate {
            id: self.certificate.clone(),
            date_ms: parse_date(&self.date).map_err(|e| anyhow::anyhow!("date = {e}"))?,
            due_ms: parse_date(&self.due).map_err(|e| anyhow::anyhow!("due = {e}"))?,
            correction,
            uncertainty_c: self.uncertainty,
            class: self.class,
        };
        c.check()?;
        Ok(c)
    }
}

/// A validated device entry.
#[derive(Debug, Clone)]
pub struct Device {
    /// Device id.
    pub id: DeviceId,
    /// Its key.
    pub key: DeviceKey,
    /// Whether unsigned JSON is accepted.
    pub allow_unsigned_json: bool,
    /// Settings pushed with the time.
    pub settings: Option<coldchain_proto::Settings>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut cfg =
            Self::parse(&text).with_context(|| format!("in config file {}", path.display()))?;
        use sha2::Digest;
        cfg.source_sha256 = Some(hex::encode(sha2::Sha256::digest(text.as_bytes())));
        Ok(cfg)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let cfg: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if DeviceId::new(&self.daemon.id).is_err() {
            bail!(
                "key daemon.id = {:?}: expected 1-32 characters of A-Z a-z 0-9 . _ -",
                self.daemon.id
            );
        }
        if self.http.tls_cert.is_some() != self.http.tls_key.is_some() {
            bail!(
                "keys http.tls_cert and http.tls_key: give both (certificate chain and its key, PEM) or neither"
            );
        }
        if !self.http.bind.ip().is_loopback() && !self.http.tls() && !self.http.allow_plain_http {
            bail!(
                "key http.tls_cert: required when http.bind ({}) is not a loopback address (passwords and sessions would cross the network in clear); set http.tls_cert and http.tls_key (deploy/install.sh can make a local certificate), or http.allow_plain_http = true to accept that",
                self.http.bind
            );
        }
        if !self.http.bind.ip().is_loopback() && self.http.anonymous_reads == Some(true) {
            bail!(
                "key http.anonymous_reads: cannot be true when http.bind ({}) is not a loopback address",
                self.http.bind
            );
        }
        if self.http.lockout_after == 0 {
            bail!(
                "key http.lockout_after: expected at least 1 (wrong passwords before an account locks)"
            );
        }
        if self.http.session_idle_s < 60 {
            bail!("key http.session_idle_s: expected at least 60 seconds");
        }
        if self.http.token.as_ref().is_some_and(|t| t.len() < 16) {
            bail!("key http.token: expected at least 16 characters");
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                bail!(
                    "key webhooks[{i}].url = {:?}: expected an http:// or https:// URL",
                    w.url
                );
            }
            w.signing_key(i)?;
        }
        if self.alerts.escalate_after_s == 0 || self.alerts.evaluate_every_s == 0 {
            bail!("keys alerts.escalate_after_s and alerts.evaluate_every_s: expected at least 1");
        }
        if self.daemon.time_refresh_s == 0 {
            bail!("key daemon.time_refresh_s: expected at least 1 (seconds)");
        }
        if let Some(url) = &self.store.postgres_url
            && let Err(e) = url.parse::<tokio_postgres::Config>()
        {
            bail!(
                "key store.postgres_url: expected a PostgreSQL URL (postgres://user@host/db) or key=value string: {e}"
            );
        }
        if self.store.postgres_url.is_some() && self.store.max_disk_mb > 0 {
            bail!(
                "key store.max_disk_mb: the disk budget applies to the sled store; on PostgreSQL, watch the database's size there (remove max_disk_mb or postgres_url)"
            );
        }
        if self.store.max_batch == 0 {
            bail!("key store.max_batch: expected at least 1");
        }
        if self.store.queue == 0 {
            bail!("key store.queue: expected at least 1");
        }
        if self.mqtt.reconnect_min_ms == 0
            || self.mqtt.reconnect_min_ms > self.mqtt.reconnect_max_ms
        {
            bail!(
                "keys mqtt.reconnect_min_ms / mqtt.reconnect_max_ms: expected 0 < min <= max, got {} and {}",
                self.mqtt.reconnect_min_ms,
                self.mqtt.reconnect_max_ms
            );
        }
        if self.mqtt.client_cert_file.is_some() != self.mqtt.client_key_file.is_some() {
            bail!("keys mqtt.client_cert_file and mqtt.client_key_file: expected both or neither");
        }
        if let Some(c) = &self.centre {
            let bad = |t: &str| t.is_empty() || t.contains(['+', '#', '\0']) || t.starts_with('$');
            if bad(&c.group) || c.group.contains('/') {
                bail!(
                    "key centre.group = {:?}: expected a non-empty name without '/', '+', '#' or a leading '$'",
                    c.group
                );
            }
            if bad(&c.edges) || c.edges.starts_with('/') || c.edges.ends_with('/') {
                bail!(
                    "key centre.edges = {:?}: expected a topic without wildcards and without a leading or trailing '/', e.g. \"coldchain/v1/edge\"",
                    c.edges
                );
            }
        }
        self.devices()?;
        for (i, d) in self.devices.iter().enumerate() {
            for (j, c) in d.calibration.iter().enumerate() {
                c.certificate().map_err(|e| {
                    anyhow::anyhow!(
                        "key devices[{i}].calibration[{j}] (device {}, channel {}): {e:#}",
                        d.id,
                        c.channel
                    )
                })?;
                if d.calibration[..j].iter().any(|o| o.channel == c.channel) {
                    bail!(
                        "key devices[{i}].calibration[{j}]: device {} channel {} has two certificates; keep the one in force",
                        d.id,
                        c.channel
                    );
                }
            }
        }
        Ok(())
    }

    /// The calibration certificate of a device's channel, if the config has
    /// one (checked when the config was loaded).
    pub fn certificate(
        &self,
        device: &str,
        channel: u8,
    ) -> Option<coldchain_engine::calibration::Certificate> {
        self.devices
            .iter()
            .find(|d| d.id == device)?
            .calibration
            .iter()
            .find(|c| c.channel == channel)
            .and_then(|c| c.certificate().ok())
    }

    /// The device entries, validated.
    pub fn devices(&self) -> anyhow::Result<Vec<Device>> {
        let mut out: Vec<Device> = Vec::with_capacity(self.devices.len());
        for (i, d) in self.devices.iter().enumerate() {
            let id = DeviceId::new(&d.id)
                .map_err(|e| anyhow::anyhow!("key devices[{i}].id = {:?}: {e}", d.id))?;
            let key = DeviceKey::from_hex(&d.key)
                .map_err(|e| anyhow::anyhow!("key devices[{i}].key (device {}): {e}", d.id))?;
            if out.iter().any(|o| o.id == id) {
                bail!("key devices[{i}].id: device {} is listed twice", d.id);
            }
            out.push(Device {
                id,
                key,
                allow_unsigned_json: d.allow_unsigned_json,
                settings: d.settings.clone(),
            });
        }
        Ok(out)
    }

    /// The profile of this name: from config if defined there, else built in.
    pub fn profile(
        &self,
        name: &str,
    ) -> Result<crate::profile::Profile, crate::profile::ProfileError> {
        match self.profiles.iter().find(|p| p.name == name) {
            Some(p) => Ok(p.clone()),
            None => crate::profile::Profile::builtin(name),
        }
    }

    /// The upstream topic prefix, when forwarding is configured.
    pub fn upstream_prefix(&self) -> Option<String> {
        self.upstream.as_ref().map(|u| {
            u.prefix
                .clone()
                .unwrap_or_else(|| format!("coldchain/v1/edge/{}", self.daemon.id))
                .trim_end_matches('/')
                .to_string()
        })
    }

    /// The MQTT client id in use.
    pub fn client_id(&self) -> String {
        self.mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("coldchain-{}", self.daemon.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_secrets_in_both_forms() {
        let hook = |secret: &str| {
            Config::parse(&format!(
                "[[webhooks]]\nurl = \"http://127.0.0.1:9/h\"\nsecret = \"{secret}\"\n"
            ))
        };
        // Standard Webhooks: whsec_ and base64 of the key bytes.
        let c = hook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let key = c.webhooks[0].signing_key(0).unwrap();
        assert_eq!(key.len(), 24);
        assert_eq!(&key[..3], &[0x31, 0xf2, 0x90]);
        // The earlier form: the text's bytes.
        let c = hook("a-shared-secret-of-16+-chars").unwrap();
        assert_eq!(
            c.webhooks[0].signing_key(0).unwrap(),
            b"a-shared-secret-of-16+-chars"
        );
        for (bad, says) in [
            ("whsec_not base64!", "standard base64"),
            ("whsec_c2hvcnQ=", "expected 24 to 64"),
            ("short", "whsec_<base64> or at least 16"),
        ] {
            let e = format!("{:#}", hook(bad).unwrap_err());
            assert!(
                e.contains("webhooks[0].secret") && e.contains(says),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn empty_file_takes_documented_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.mqtt.port, 1883);
        assert_eq!(c.http.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.client_id(), "coldchain-edge");
        assert_eq!(c.daemon.data_dir, PathBuf::from("/var/lib/coldchain"));
    }

    #[test]
    fn errors_name_the_key() {
        let e = format!("{:#}", Config::parse("[mqtt]\nprot = 1\n").unwrap_err());
        assert!(e.contains("prot"), "{e}");
        let e = format!("{:#}", Config::parse("[mqtt]\nport = \"x\"\n").unwrap_err());
        assert!(e.contains("port"), "{e}");
        let e = format!(
            "{:#}",
            Config::parse("[[devices]]\nid = \"a\"\nkey = \"zz\"\n").unwrap_err()
        );
        assert!(
            e.contains("devices[0].key") && e.contains("64 hexadecimal"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            Config::parse("[[devices]]\nid = \"a/b\"\nkey = \"00\"\n").unwrap_err()
        );
        assert!(e.contains("devices[0].id"), "{e}");
    }

    #[test]
    fn the_example_config_parses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/coldchain.example.toml"
        );
        Config::load(Path::new(path)).unwrap();
    }

    /// Every commented-out section and key of the example, uncommented, is
    /// valid configuration too: the example shows the configuration exactly
    /// as it is written.
    #[test]
    fn the_example_config_with_every_option_enabled_parses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/coldchain.example.toml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let mut seen_settings = false;
        let all: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with('[')
                        || rest.split_once(" = ").is_some_and(|(k, _)| {
                            k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        }) =>
                {
                    seen_settings |= rest.starts_with("[devices.settings]");
                    rest.to_string()
                }
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(seen_settings, "the example shows [devices.settings]");
        let cfg = Config::parse(&all).unwrap_or_else(|e| panic!("{e:#}\n{all}"));
        assert_eq!(cfg.profiles.len(), 1);
        assert_eq!(cfg.profiles[0].settle_ms, Some(15 * 60_000));
        assert!(cfg.devices[0].settings.is_some());
        assert_eq!(cfg.webhooks.len(), 1);
        let c = cfg
            .certificate("sim-0001", 0)
            .expect("the example's certificate");
        assert_eq!(c.id, "CAL-2026-0113");
        assert_eq!(c.correct_milli(-150_000), -150_120);
    }

    #[test]
    fn calibration_entries_are_checked_naming_the_key() {
        let base = "[daemon]\nid = \"t\"\n[[devices]]\nid = \"d1\"\nkey = \"0000000000000000000000000000000000000000000000000000000000000000\"\n";
        let cal = |body: &str| {
            format!(
                "{base}[[devices.calibration]]\nchannel = 0\ncertificate = \"C1\"\ndate = \"2026-01-01\"\ndue = \"2027-01-01\"\nuncertainty = 0.1\n{body}"
            )
        };
        let two = "two_point = { measured = [-196.4, 0.1], reference = [-196.0, 0.0] }\n";
        let cfg = Config::parse(&cal(two)).unwrap();
        assert_eq!(cfg.certificate("d1", 0).unwrap().correct_milli(100), 0);
        assert!(cfg.certificate("d1", 1).is_none());
        for (body, what) in [
            (
                "offset = 0.1\n".to_string() + two,
                "exactly one of offset or two_point",
            ),
            (String::new(), "exactly one of offset or two_point"),
            ("offset = 0.1\nclass = \"C\"\n".into(), "unknown variant"),
            ("offset = 0.1\n".into(), ""),
        ] {
            let r = Config::parse(&cal(&body));
            if what.is_empty() {
                assert!(r.is_ok(), "{body}: {r:?}");
                continue;
            }
            let e = format!("{:#}", r.unwrap_err());
            assert!(e.contains(what), "{body}: {e}");
        }
        let e = format!(
            "{:#}",
            Config::parse(&cal("offset = 0.1\n").replace("2027-01-01", "2027-02-30")).unwrap_err()
        );
        assert!(
            e.contains("devices[0].calibration[0] (device d1, channel 0): due = \"2027-02-30\": expected a date YYYY-MM-DD"),
            "{e}"
        );
    }
}
