//! A real PostgreSQL server for the tests: Debian's packaged binaries
//! (`apt-get install postgresql`, which tests/run.sh does when they are
//! missing), a fresh cluster in a temporary directory on a free loopback
//! port, stopped when the handle drops.
//!
//! PostgreSQL refuses to run as root: as root the cluster belongs to the
//! `postgres` account the package creates, and its programs run under it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Proc, free_port, wait_for};

/// A running PostgreSQL cluster.
#[derive(Debug)]
pub struct Postgres {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
    proc: Option<Proc>,
}

/// Debian's versioned binary directory (the newest), else `PATH`.
fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(d) = dirs.pop() {
        return d;
    }
    crate::which("initdb")
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .expect("PostgreSQL is not installed (apt-get install postgresql; tests/run.sh does it)")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `program` from the PostgreSQL binaries, as `postgres` when we are root.
fn pg_command(bin: &Path, program: &str) -> Command {
    if is_root() {
        // setpriv execs the program itself (no parent left between us and
        // it), so the signals of [`Proc`] reach the server.
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
        ])
        .arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

/// Makes `dir` a directory the server can use: as root it belongs to
/// `postgres`, and the directories above it must be traversable.
fn prepare_dir(dir: &Path) {
    std::fs::create_dir_all(dir).expect("postgres dir");
    if !is_root() {
        return;
    }
    // The cluster and its socket directory belong to `postgres`.
    let st = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()
        .expect("chown");
    assert!(
        st.success(),
        "chown of {} to postgres failed",
        dir.display()
    );
    // The temporary directories above it must be traversable.
    let mut p = dir.parent();
    while let Some(d) = p {
        if d == Path::new("/") {
            break;
        }
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(d) {
            let mode = m.permissions().mode();
            if mode & 0o001 == 0 {
                let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o001));
            }
        }
        p = d.parent();
    }
}

impl Postgres {
    /// Creates a cluster in `dir` (which must not exist yet or be empty) and
    /// starts it; the superuser is `coldchain`, trusted on loopback.
    pub fn start(dir: &Path) -> Postgres {
        let bin = bin_dir();
        prepare_dir(dir);
        let data = dir.join("data");
        let out = pg_command(&bin, "initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "coldchain",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdout(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self::launch(bin, dir)
    }

    /// Starts a server on the cluster that [`Postgres::start`] created in
    /// `dir` and [`Postgres::stop`] stopped (possibly copied elsewhere since,
    /// e.g. a populated database kept by a benchmark), on a new port.
    pub fn start_existing(dir: &Path) -> Postgres {
        assert!(
            dir.join("data/PG_VERSION").exists(),
            "{} holds no PostgreSQL cluster (data/PG_VERSION)",
            dir.display()
        );
        let bin = bin_dir();
        prepare_dir(dir);
        Self::launch(bin, dir)
    }

    fn launch(bin: PathBuf, dir: &Path) -> Postgres {
        let data = dir.join("data");
        let port = free_port();
        let mut cmd = pg_command(&bin, "postgres");
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            // Several daemons and the tests' own clients.
            .args(["-c", "max_connections=200"]);
        let proc = Proc::spawn("postgres", cmd, &dir.join("postgres.log"));
        let pg = Postgres {
            port,
            bin,
            dir: dir.to_path_buf(),
            proc: Some(proc),
        };
        wait_for(
            Duration::from_secs(60),
            "PostgreSQL accepting connections",
            || pg.psql("postgres", "SELECT 1").ok(),
        );
        pg
    }

    /// The server's process id (the postmaster; its backends are its
    /// children), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.child.id())
    }

    /// Stops the server with a fast shutdown, which ends with a checkpoint:
    /// once it returns `true` the data directory is complete on its own and
    /// can be copied. Waits up to `grace`, then kills it (and returns
    /// `false`).
    pub fn stop(&mut self, grace: Duration) -> bool {
        match self.proc.take() {
            Some(mut p) => {
                p.signal(nix::sys::signal::Signal::SIGINT);
                wait_for_exit(&mut p, grace)
            }
            None => true,
        }
    }

    /// Creates a database and returns its URL.
    pub fn create_db(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        self.url(name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://coldchain@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs SQL with `psql` and returns its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "coldchain",
            ])
            .args(["-d", db, "-c", sql])
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            // Fast shutdown: the cluster is thrown away.
            p.signal(nix::sys::signal::Signal::SIGINT);
            let _ = wait_for_exit(&mut p, Duration::from_secs(10));
        }
    }
}

fn wait_for_exit(p: &mut Proc, grace: Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < grace {
        if let Ok(Some(_)) = p.child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    p.kill9();
    false
}
