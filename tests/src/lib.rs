//! Harness for Coldchain's end-to-end tests: real processes only.
//!
//! * [`Mosquitto`]: a real `mosquitto` on a free loopback port, with its own
//!   config and persistence directory in a temporary directory.
//! * [`Daemon`]: the real `coldchain` binary with a generated config and a
//!   real sled database on disk; stopped with SIGTERM or killed with SIGKILL.
//! * [`bin`]: builds (once per test process) and locates the workspace binaries.
//!
//! Every child is killed when its handle drops, so a failing test leaves no
//! stray processes behind.

pub mod postgres;
pub use postgres::Postgres;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// The example key documented in proto/README.md. Tests only.
pub const TEST_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// A free TCP port on 127.0.0.1 (bound then released), never one this test
/// process has handed out before: tests of one binary run in parallel, and
/// two of them must not be given the same broker or HTTP port.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        if given.insert(port) {
            return port;
        }
    }
}

/// Waits until `f` returns `Some`, polling every 50 ms, up to `timeout`.
/// The timeout only bounds a hang; no test asserts on how long anything took.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn target_dir() -> PathBuf {
    // Test executables live in <target>/<profile>/deps/; the crate's own
    // binaries (the load harness) in <target>/<profile>/.
    let exe = std::env::current_exe().expect("current_exe");
    let parent = exe.parent().expect("executable has a directory");
    if parent.file_name().is_some_and(|n| n == "deps") {
        parent
            .parent()
            .expect("test executable is in <target>/<profile>/deps")
            .to_path_buf()
    } else {
        parent.to_path_buf()
    }
}

/// Path of a workspace binary, built once per test process with the same
/// profile as the tests (a no-op when it is up to date).
///
/// `tests/run.sh` sets `COLDCHAIN_BINS_BUILT=1`: there `cargo test --workspace`
/// has already built both binaries with the same features (the daemon and the
/// simulator packages have integration tests of their own, so cargo builds
/// their binaries first), and a nested `cargo build` of two packages would
/// unify features differently and rebuild half the dependency tree.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if std::env::var_os("COLDCHAIN_BINS_BUILT").is_some() {
            return;
        }
        let dir = target_dir();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args([
            "build",
            "--bins",
            "-p",
            "coldchain-daemon",
            "-p",
            "coldchain-sim",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        if release {
            cmd.arg("--release");
        }
        if let Some(t) = dir.parent() {
            cmd.env("CARGO_TARGET_DIR", t);
        }
        let st = cmd.status().expect("run cargo build");
        assert!(st.success(), "cargo build of the binaries failed");
    });
    let p = target_dir().join(name);
    assert!(p.exists(), "{} not found after build", p.display());
    p
}

/// Finds an executable on PATH (and in /usr/sbin, where Debian puts mosquitto).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/usr/local/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// A child process killed on drop.
#[derive(Debug)]
pub struct Proc {
    /// The child.
    pub child: Child,
    name: String,
}

impl Proc {
    /// Spawns `cmd`, stderr to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let log_file = std::fs::File::create(log).expect("create log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.into(),
        }
    }

    /// Sends a signal.
    pub fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), sig);
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit status (SIGKILL after `grace`).
    pub fn terminate(&mut self, grace: Duration) -> std::process::ExitStatus {
        self.signal(Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            if start.elapsed() > grace {
                self.kill9();
                panic!("{} did not exit within {grace:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// A real Mosquitto broker on a free loopback port.
#[derive(Debug)]
pub struct Mosquitto {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
    /// A config of the test's own instead of the default anonymous one.
    conf: Option<String>,
    /// The default config's `max_packet_size`, or none.
    packet_limit: bool,
}

impl Mosquitto {
    /// Starts a broker with persistence in `dir` (so a restart keeps sessions
    /// and queued messages, like a production broker).
    /// Like the shipped configurations, it sets `max_packet_size`
    /// ([`coldchain_proto::topic::BROKER_MAX_PACKET_SIZE`]).
    pub fn start(dir: &Path) -> Mosquitto {
        let mut m = Mosquitto {
            port: free_port(),
            dir: dir.to_path_buf(),
            proc: None,
            conf: None,
            packet_limit: true,
        };
        m.restart();
        m
    }

    /// [`Mosquitto::start`] without `max_packet_size`: the broker takes and
    /// delivers messages of any size MQTT allows (a broker someone else set up).
    pub fn start_without_packet_limit(dir: &Path) -> Mosquitto {
        let mut m = Mosquitto {
            port: free_port(),
            dir: dir.to_path_buf(),
            proc: None,
            conf: None,
            packet_limit: false,
        };
        m.restart();
        m
    }

    /// Starts a broker with the config `conf(port)` (port: a free port the
    /// config must listen on, on 127.0.0.1; readiness is a TCP connect to it).
    /// Used as is on every restart. As root, the config needs `user root` to
    /// write its persistence into `dir`.
    pub fn start_with_config(dir: &Path, conf: impl FnOnce(u16) -> String) -> Mosquitto {
        let port = free_port();
        let mut m = Mosquitto {
            port,
            dir: dir.to_path_buf(),
            proc: None,
            conf: Some(conf(port)),
            packet_limit: true,
        };
        m.restart();
        m
    }

    /// (Re)starts the broker on the same port with the same persistence.
    pub fn restart(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(10));
        }
        let exe = which("mosquitto")
            .expect("mosquitto not installed: run the README's test command, which installs it");
        std::fs::create_dir_all(&self.dir).expect("broker dir");
        let conf = self.dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 persistence true\n\
                 persistence_location {dir}/\n\
                 autosave_interval 1\n\
                 max_inflight_messages 1000\n\
                 max_queued_messages 0\n\
                 max_queued_bytes 0\n\
                 {limit}\
                 log_dest stderr\n\
                 log_type error\n\
                 log_type warning\n\
                 {user}",
                port = self.port,
                dir = self.dir.display(),
                limit = if self.packet_limit {
                    format!(
                        "max_packet_size {}\n",
                        coldchain_proto::topic::BROKER_MAX_PACKET_SIZE
                    )
                } else {
                    String::new()
                },
                // As root, mosquitto drops to the `mosquitto` user, which cannot
                // write its persistence file into our temporary directory.
                user = if nix::unistd::Uid::effective().is_root() {
                    "user root\n"
                } else {
                    ""
                },
            ),
        )
        .expect("write mosquitto.conf");
        if let Some(custom) = &self.conf {
            std::fs::write(&conf, custom).expect("write mosquitto.conf");
        }
        let mut cmd = Command::new(exe);
        cmd.arg("-c").arg(&conf);
        self.proc = Some(Proc::spawn(
            "mosquitto",
            cmd,
            &self.dir.join("mosquitto.log"),
        ));
        let port = self.port;
        wait_for(
            Duration::from_secs(10),
            "mosquitto to accept connections",
            || {
                // A connect to a port nobody listens on can, rarely, connect
                // to itself (TCP simultaneous open, when the kernel picks the
                // same port as the source): not a broker.
                TcpStream::connect(("127.0.0.1", port))
                    .ok()
                    .filter(|s| s.local_addr().map(|a| a.port()).ok() != Some(port))
            },
        );
        // Something answered on the port: make sure it is our broker and not
        // another process that had it (our broker then exits at once).
        std::thread::sleep(Duration::from_millis(100));
        let proc = self.proc.as_mut().expect("just started");
        if let Ok(Some(st)) = proc.child.try_wait() {
            panic!(
                "mosquitto on port {port} exited ({st}) right after starting:\n{}",
                self.log()
            );
        }
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.child.id())
    }

    /// Stops the broker (SIGTERM: it saves its persistence file).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(10));
        }
    }
}

/// The daemon under test.
#[derive(Debug)]
pub struct Daemon {
    /// Its HTTP port.
    pub http_port: u16,
    /// Its config file.
    pub config: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
    log: PathBuf,
    proc: Option<Proc>,
    starts: u32,
}

/// A device entry for the daemon config.
#[derive(Debug, Clone)]
pub struct DeviceCfg {
    /// Id.
    pub id: String,
    /// Key, hex.
    pub key: String,
    /// Unsigned JSON allowed.
    pub allow_unsigned_json: bool,
}

impl DeviceCfg {
    /// A signing device with the test key.
    pub fn new(id: &str) -> Self {
        DeviceCfg {
            id: id.into(),
            key: TEST_KEY.into(),
            allow_unsigned_json: false,
        }
    }
}

impl Daemon {
    /// Writes a config for a daemon talking to `broker_port` and starts it.
    pub fn start(dir: &Path, broker_port: u16, devices: &[DeviceCfg], extra: &str) -> Daemon {
        let opts = DaemonOpts {
            extra: extra.into(),
            ..DaemonOpts::default()
        };
        Self::start_with(dir, broker_port, devices, &opts)
    }

    /// [`Daemon::start`] with keys added inside the generated `[mqtt]` and
    /// `[http]` sections (TOML forbids repeating a table).
    pub fn start_with(
        dir: &Path,
        broker_port: u16,
        devices: &[DeviceCfg],
        opts: &DaemonOpts,
    ) -> Daemon {
        let (mqtt, http, extra) = (&opts.mqtt, &opts.http, &opts.extra);
        std::fs::create_dir_all(dir).expect("daemon dir");
        let http_port = free_port();
        let data_dir = dir.join("data");
        let host = if opts.bind_all {
            "0.0.0.0"
        } else {
            "127.0.0.1"
        };
        let mut cfg = format!(
            "[daemon]\nid = \"test\"\ndata_dir = \"{}\"\n\n[mqtt]\nport = {broker_port}\nreconnect_min_ms = 50\nreconnect_max_ms = 500\n{mqtt}\n\n[http]\nbind = \"{host}:{http_port}\"\n{http}\n\n{extra}\n",
            data_dir.display()
        );
        for d in devices {
            cfg.push_str(&format!(
                "[[devices]]\nid = \"{}\"\nkey = \"{}\"\nallow_unsigned_json = {}\n\n",
                d.id, d.key, d.allow_unsigned_json
            ));
        }
        let config = dir.join("coldchain.toml");
        std::fs::write(&config, cfg).expect("write daemon config");
        let mut d = Daemon {
            http_port,
            config,
            data_dir,
            log: dir.join("daemon"),
            proc: None,
            starts: 0,
        };
        d.restart();
        // On a plain broker, wait until the daemon has subscribed: a frame
        // published before its first session exists would have no subscriber.
        // (TLS and password setups pass their own arguments to
        // `wait_daemon_online` themselves.)
        if opts.mqtt.is_empty()
            && let Err(e) = try_daemon_online(broker_port, &[])
        {
            panic!("{e}\ndaemon log:\n{}", d.logs());
        }
        d
    }

    /// Starts the daemon again with the same config and database.
    pub fn restart(&mut self) {
        assert!(self.proc.is_none(), "daemon already running");
        self.starts += 1;
        let mut cmd = Command::new(bin("coldchain"));
        cmd.arg("run").arg("--config").arg(&self.config);
        let log = self.log.with_extension(format!("{}.log", self.starts));
        self.proc = Some(Proc::spawn("coldchain", cmd, &log));
        let port = self.http_port;
        let tls = std::fs::read_to_string(&self.config).is_ok_and(|c| c.contains("tls_cert"));
        if tls {
            // HTTPS: the test's own client checks the certificate; here only
            // that the daemon listens.
            wait_for(Duration::from_secs(30), "daemon listening (HTTPS)", || {
                std::net::TcpStream::connect(("127.0.0.1", port)).ok()
            });
        } else {
            wait_for(Duration::from_secs(30), "daemon /healthz", || {
                http_get(port, "/healthz").ok()
            });
        }
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.child.id())
    }

    /// SIGKILL: a crash. Nothing gets flushed.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// SIGTERM; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut p = self.proc.take().expect("daemon not running");
        p.terminate(Duration::from_secs(20))
    }

    /// GET a JSON document from the API.
    pub fn get(&self, path: &str) -> Value {
        http_get(self.http_port, path).unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
    }

    /// Every stored reading of a device, following the pagination cursor.
    pub fn all_readings(&self, device: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(a) => format!("/api/v1/devices/{device}/readings?limit=5000&after={a}"),
                None => format!("/api/v1/devices/{device}/readings?limit=5000"),
            };
            let page = self.get(&path);
            out.extend(page["readings"].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(n) => after = Some(n.to_string()),
                None => return out,
            }
        }
    }

    /// A counter from /api/v1/stats, e.g. `"readings_stored"` or `"rejected.bad_tag"`.
    pub fn stat(&self, path: &str) -> u64 {
        let mut v = self.get("/api/v1/stats");
        for part in path.split('.') {
            v = v[part].clone();
        }
        v.as_u64().unwrap_or_else(|| panic!("stat {path} missing"))
    }

    /// The daemon's logs so far (all runs), for assertion messages.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.log.with_extension(format!("{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n---- restart ----\n")
    }
}

/// GET `path` from 127.0.0.1:`port` and parse JSON (or wrap text as a JSON string).
pub fn http_get(port: u16, path: &str) -> anyhow::Result<Value> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut resp = ureq::get(&url).call().with_context(|| url.clone())?;
    let text = resp.body_mut().read_to_string()?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Runs `coldchain-sim` to completion with `args`; returns its final JSON summary line.
pub fn run_sim(args: &[&str]) -> Value {
    let out: Output = Command::new(bin("coldchain-sim"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run coldchain-sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "coldchain-sim {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("sim summary {last:?}: {e}"))
}

/// Starts `mosquitto_sub` on `topic` printing `topic payload` lines; returns the child and a reader.
pub fn mosquitto_sub(
    port: u16,
    args: &[&str],
) -> anyhow::Result<(Child, BufReader<std::process::ChildStdout>)> {
    let exe = which("mosquitto_sub").context("mosquitto_sub not installed")?;
    let mut child = Command::new(exe)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = child.stdout.take().context("stdout")?;
    Ok((child, BufReader::new(out)))
}

/// Publishes with the real `mosquitto_pub` (a client we did not write).
pub fn mosquitto_pub(port: u16, topic: &str, payload: &[u8]) -> anyhow::Result<()> {
    let exe = which("mosquitto_pub").context("mosquitto_pub not installed")?;
    let dir = tempfile::tempdir()?;
    let f = dir.path().join("payload");
    std::fs::write(&f, payload)?;
    let st = Command::new(exe)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-f",
        ])
        .arg(&f)
        .status()?;
    if !st.success() {
        bail!("mosquitto_pub exited with {st}");
    }
    Ok(())
}

/// Reads lines until `pred` matches one (or EOF).
pub fn read_until(r: &mut impl BufRead, mut pred: impl FnMut(&str) -> bool) -> Option<String> {
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) if pred(line.trim_end()) => return Some(line.trim_end().to_string()),
            Ok(_) => {}
        }
    }
}

/// Options of [`Daemon::start_with`].
#[derive(Debug, Clone, Default)]
pub struct DaemonOpts {
    /// Lines added to the `[mqtt]` section (e.g. `ca_file`, `username`).
    pub mqtt: String,
    /// Lines added to the `[http]` section.
    pub http: String,
    /// Text after the generated sections (other tables).
    pub extra: String,
    /// Listen on every address (`0.0.0.0`) instead of loopback: reads then
    /// need the token, as on a gateway reachable from the network.
    pub bind_all: bool,
}

impl Mosquitto {
    /// The broker's log (stderr) so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

/// Runs the real `mosquitto_pub` against 127.0.0.1:`port` with extra `args`
/// (TLS, credentials), QoS 1, `payload` from a file; returns its output
/// whatever its exit status.
pub fn mosquitto_pub_with(
    port: u16,
    args: &[&str],
    topic: &str,
    payload: &[u8],
) -> anyhow::Result<Output> {
    let exe = which("mosquitto_pub").context("mosquitto_pub not installed")?;
    let dir = tempfile::tempdir()?;
    let f = dir.path().join("payload");
    std::fs::write(&f, payload)?;
    Ok(Command::new(exe)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(args)
        .args(["-t", topic, "-f"])
        .arg(&f)
        .stdin(Stdio::null())
        .output()?)
}

/// The API token the harness configures when a test asks for one.
pub const TEST_TOKEN: &str = "test-token-0123456789abcdef";

/// POSTs JSON to the API with an optional bearer token; returns status and body.
pub fn http_post(port: u16, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut req = agent.post(&url);
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req
        .send_json(body)
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Publishes each line as one message with `mosquitto_pub -l` (one connection, QoS 1).
pub fn mosquitto_pub_lines(port: u16, topic: &str, lines: &[String]) -> anyhow::Result<()> {
    use std::io::Write;
    let exe = which("mosquitto_pub").context("mosquitto_pub not installed")?;
    let mut child = Command::new(exe)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-l",
        ])
        .stdin(Stdio::piped())
        .spawn()?;
    {
        let mut stdin = child.stdin.take().context("stdin")?;
        for l in lines {
            writeln!(stdin, "{l}")?;
        }
    }
    let st = child.wait()?;
    if !st.success() {
        bail!("mosquitto_pub -l exited with {st}");
    }
    Ok(())
}

/// A signed JSON envelope (see proto/README.md) for a frame of readings of
/// channel 0 (`Some(m°C)` or `None` for an open-circuit fault) at the given device times.
pub fn json_frame(device: &str, boot: u32, seq: u32, readings: &[(i64, Option<i32>)]) -> String {
    json_frame_with_key(TEST_KEY, device, boot, seq, readings)
}

/// [`json_frame`] signed with another key (64 hex digits).
pub fn json_frame_with_key(
    key: &str,
    device: &str,
    boot: u32,
    seq: u32,
    readings: &[(i64, Option<i32>)],
) -> String {
    use coldchain_proto::{
        Body, ChannelKind, DeviceId, DeviceKey, FaultKind, Frame, Measurement, Reading, Timestamp,
    };
    let t0 = readings.first().map(|r| r.0).unwrap_or(0);
    let rs: Vec<Reading> = readings
        .iter()
        .map(|&(t, v)| Reading {
            channel: 0,
            kind: ChannelKind::Rtd,
            dt_ms: (t - t0) as u32,
            value: match v {
                Some(m) => Measurement::Valid(m),
                None => Measurement::Fault(FaultKind::OpenCircuit),
            },
        })
        .collect();
    let f = Frame {
        device: DeviceId::new(device).expect("device id"),
        boot,
        seq,
        time: Timestamp::Wall(t0 as u64),
        body: Body::Readings(heapless::Vec::from_slice(&rs).expect("at most 32 readings")),
    };
    let text = serde_json::to_string(&f).expect("frame json");
    let tag = DeviceKey::from_hex(key).expect("key").sign(text.as_bytes());
    format!("{{\"frame\":{text},\"tag\":\"{}\"}}", hex::encode(tag))
}

/// 250 minutes of `device` from `t0`, one reading a minute, 10 readings a
/// frame (25 signed JSON frames, boot 1, seq 0..25): 5 °C but for 40 min at
/// 9.5 °C from minute 90 (H1 on the fridge lane) and 20 min at 16 °C from
/// minute 200 (H3).
pub fn two_excursions(device: &str, t0: i64) -> Vec<String> {
    let rs: Vec<(i64, Option<i32>)> = (0..250)
        .map(|i| {
            let v = match i {
                90..130 => 9_500,
                200..220 => 16_000,
                _ => 5_000,
            };
            (t0 + i * 60_000, Some(v))
        })
        .collect();
    rs.chunks(10)
        .enumerate()
        .map(|(i, c)| json_frame(device, 1, i as u32, c))
        .collect()
}

/// Now, ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Waits until the harness daemon (id `test`) has published its retained
/// `online` status: it is connected and its subscriptions are in place (it
/// subscribes before publishing that). Before this, a frame published to a
/// broker that has never seen the daemon's session has no subscriber and is
/// dropped. `args`: extra `mosquitto_sub` arguments (TLS, credentials).
/// Meant for a first start: after a restart an older retained `online` may
/// still be there.
pub fn wait_daemon_online(broker_port: u16, args: &[&str]) {
    if let Err(e) = try_daemon_online(broker_port, args) {
        panic!("{e}");
    }
}

/// [`wait_daemon_online`] that returns what went wrong instead of panicking.
/// A watcher that exits early (the broker refused or dropped it) is started
/// again until the 60 s are up; the error carries its last words.
pub fn try_daemon_online(broker_port: u16, args: &[&str]) -> Result<(), String> {
    let exe = which("mosquitto_sub").ok_or("mosquitto_sub not installed")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempts = 0;
    let mut last = String::new();
    while Instant::now() < deadline {
        attempts += 1;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_secs()
            .max(1);
        let err = tempfile::tempfile().map_err(|e| format!("temporary file: {e}"))?;
        let mut err_r = err
            .try_clone()
            .map_err(|e| format!("temporary file: {e}"))?;
        let mut sub = Command::new(&exe)
            .args(["-h", "127.0.0.1", "-p", &broker_port.to_string()])
            .args(args)
            .args([
                "-t",
                "coldchain/v1/daemon/test/online",
                "-W",
                &left.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start mosquitto_sub: {e}"))?;
        let mut out = BufReader::new(sub.stdout.take().ok_or("mosquitto_sub stdout")?);
        let got = read_until(&mut out, |l| l == "online");
        let _ = sub.kill();
        let status = sub.wait();
        if got.is_some() {
            return Ok(());
        }
        use std::io::{Read, Seek};
        let mut said = String::new();
        let _ = err_r.rewind();
        let _ = err_r.read_to_string(&mut said);
        last = format!("{status:?}: {}", said.trim());
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!(
        "the daemon did not come online on the broker at port {broker_port} within 60 s \
         ({attempts} mosquitto_sub attempts; the last one ended with {last})"
    ))
}

/// The `(boot, seq, idx)` of each stored reading in `rows` (as
/// [`Daemon::all_readings`] returns them), asserting that none is there twice.
pub fn reading_ids(rows: &[Value]) -> std::collections::BTreeSet<(u64, u64, u64)> {
    let id = |r: &Value, k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("reading without {k}: {r}"))
    };
    let ids: Vec<_> = rows
        .iter()
        .map(|r| (id(r, "boot"), id(r, "seq"), id(r, "idx")))
        .collect();
    let set: std::collections::BTreeSet<_> = ids.iter().copied().collect();
    assert_eq!(set.len(), ids.len(), "a reading is stored twice");
    set
}

/// An alert's condition kind as text: `"trend"`, or `"H1"` for `{"zone": "H1"}`.
pub fn alert_kind(a: &Value) -> String {
    match &a["condition"]["kind"] {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .values()
            .next()
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
        v => v.to_string(),
    }
}

/// CPU seconds (utime + stime, from `/proc/<pid>/stat`) a process has used;
/// 0 when it is gone. For the benchmarks.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name start at field 3 (state):
    // utime (field 14) is index 11, stime (field 15) index 12.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // The kernel's USER_HZ is 100 on every Linux target we run on.
    (ticks(11) + ticks(12)) / 100.0
}

/// A `kB` field of `/proc/<pid>/status`, e.g. `"VmHWM:"` (peak RSS) or `"VmRSS:"`.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The `p` quantile (0..=1, nearest rank) of sorted values; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
