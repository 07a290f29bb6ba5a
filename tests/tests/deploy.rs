//! deploy/: `install.sh` into a temporary DESTDIR (no effect outside it),
//! the unit it installs checked by `systemd-analyze verify` when available,
//! and a key rotation with `mint-device.sh` against the real daemon.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use coldchain_proto::codec::{MAX_SIGNED_LEN, encode_signed};
use coldchain_proto::{
    Body, ChannelKind, DeviceId, DeviceKey, Frame, Measurement, Reading, Timestamp,
};
use coldchain_tests::*;

const T: Duration = Duration::from_secs(60);

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

/// Runs a deploy script with the daemon binary's directory on PATH (so the
/// scripts' `coldchain check-config` runs); panics unless it succeeds.
fn script(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let bin_dir = bin("coldchain").parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(deploy(name))
        .args(args)
        .envs(env.iter().copied())
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "{name} {args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn user_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["passwd", name])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn install_sh_into_destdir_puts_every_file_in_place_and_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let daemon = bin("coldchain");
    let daemon = daemon.to_str().unwrap();
    let user_before = user_exists("coldchain");
    let unit_on_host = Path::new("/etc/systemd/system/coldchain.service").exists();

    let out = script(
        "install.sh",
        &["--bin", daemon],
        &[("DESTDIR", root.to_str().unwrap())],
    );
    let log = String::from_utf8_lossy(&out.stdout).into_owned();

    let f = |p: &str| root.join(p.trim_start_matches('/'));
    for (path, want) in [
        ("/usr/local/bin/coldchain", 0o755),
        ("/usr/local/sbin/coldchain-mint-device", 0o755),
        ("/usr/local/share/coldchain/mosquitto/prod.conf", 0o644),
        ("/usr/local/share/coldchain/mosquitto/dev.conf", 0o644),
        ("/usr/local/share/coldchain/mosquitto/acl", 0o644),
        ("/usr/local/share/coldchain/coldchain.example.toml", 0o644),
        ("/usr/local/share/doc/coldchain/README.md", 0o644),
        ("/etc/systemd/system/coldchain.service", 0o644),
        ("/etc/coldchain", 0o750),
        ("/etc/coldchain/coldchain.toml", 0o640),
    ] {
        assert_eq!(mode(&f(path)), want, "mode of {path}; install log:\n{log}");
    }
    assert_eq!(
        std::fs::read(f("/usr/local/bin/coldchain")).unwrap(),
        std::fs::read(daemon).unwrap()
    );
    // The unit points at the installed paths, not at DESTDIR.
    let unit = std::fs::read_to_string(f("/etc/systemd/system/coldchain.service")).unwrap();
    assert!(unit.contains(
        "\nExecStart=/usr/local/bin/coldchain run --config /etc/coldchain/coldchain.toml\n"
    ));
    assert!(!unit.contains(root.to_str().unwrap()));
    for key in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "StateDirectory=coldchain",
        "User=coldchain",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/coldchain",
        "\nCapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(key), "unit lacks {key:?}");
    }
    // The config: the example with no active device (its key is public), and
    // the daemon accepts it.
    let cfg = f("/etc/coldchain/coldchain.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with("[[devices]]")),
        "{text}"
    );
    assert!(text.contains("# [[devices]]"));
    let check = Command::new(f("/usr/local/bin/coldchain"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("0 devices"),
        "{check:?}"
    );

    // Again, over an edited config: the config is kept, the rest replaced.
    std::fs::write(&cfg, format!("{text}\n# edited by the operator\n")).unwrap();
    std::fs::write(f("/usr/local/bin/coldchain"), b"old binary").unwrap();
    let out = script(
        "install.sh",
        &["--bin", daemon],
        &[("DESTDIR", root.to_str().unwrap())],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept the existing"));
    assert!(
        std::fs::read_to_string(&cfg)
            .unwrap()
            .ends_with("# edited by the operator\n")
    );
    assert_eq!(
        std::fs::read(f("/usr/local/bin/coldchain")).unwrap(),
        std::fs::read(daemon).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(f("/etc/systemd/system/coldchain.service")).unwrap(),
        unit
    );
    // No temporary files left behind.
    let stray: Vec<_> = walk(&root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".install.")
        })
        .collect();
    assert!(stray.is_empty(), "{stray:?}");

    // Another prefix.
    let out = Command::new("bash")
        .arg(deploy("install.sh"))
        .args(["--bin", daemon, "--prefix", "/opt/coldchain"])
        .env("DESTDIR", tmp.path().join("root3"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let unit3 = std::fs::read_to_string(
        tmp.path()
            .join("root3/etc/systemd/system/coldchain.service"),
    )
    .unwrap();
    assert!(unit3.contains("\nExecStart=/opt/coldchain/bin/coldchain run "));
    assert!(unit3.contains("\nExecStartPre=/opt/coldchain/bin/coldchain check-config "));
    assert!(
        tmp.path()
            .join("root3/opt/coldchain/bin/coldchain")
            .exists()
    );

    // With --https-name: a local CA and the daemon's certificate, and a new
    // config that serves HTTPS with them (and still passes check-config).
    let root4 = tmp.path().join("root4");
    let out = Command::new("bash")
        .arg(deploy("install.sh"))
        .args(["--bin", daemon, "--https-name", "gw.example.net,127.0.0.1"])
        .env("DESTDIR", &root4)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pki = root4.join("etc/coldchain/pki");
    assert_eq!(mode(&pki.join("https.key")), 0o600);
    assert_eq!(mode(&pki.join("https.pem")), 0o644);
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(pki.join("ca.pem"))
        .arg(pki.join("https.pem"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
    let cfg4 = root4.join("etc/coldchain/coldchain.toml");
    let text4 = std::fs::read_to_string(&cfg4).unwrap();
    assert!(
        text4.contains("\ntls_cert = \"/etc/coldchain/pki/https.pem\"\n")
            && text4.contains("\ntls_key = \"/etc/coldchain/pki/https.key\"\n"),
        "{text4}"
    );
    let check = Command::new(daemon)
        .args(["check-config", "--config"])
        .arg(&cfg4)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");

    // Nothing happened outside DESTDIR.
    assert_eq!(user_exists("coldchain"), user_before, "a user was created");
    assert_eq!(
        Path::new("/etc/systemd/system/coldchain.service").exists(),
        unit_on_host
    );

    // systemd's own check of the installed unit (with ExecStart pointing at
    // the binary inside DESTDIR, which verify requires to exist).
    if let Some(analyze) = which("systemd-analyze") {
        let dir = tmp.path().join("verify");
        std::fs::create_dir_all(&dir).unwrap();
        let unit_file = dir.join("coldchain.service");
        let bin_in_root = f("/usr/local/bin/coldchain");
        std::fs::write(
            &unit_file,
            unit.replace("/usr/local/bin/coldchain", bin_in_root.to_str().unwrap()),
        )
        .unwrap();
        let out = Command::new(analyze)
            .arg("verify")
            .arg(&unit_file)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && said.trim().is_empty(), "{said}");
    } else {
        eprintln!("systemd-analyze not installed: unit not verified");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

fn signed_frame(dev: &str, seq: u32, key: &DeviceKey) -> Vec<u8> {
    let r = Reading {
        channel: 0,
        kind: ChannelKind::Rtd,
        dt_ms: 0,
        value: Measurement::Valid(-190_000),
    };
    let f = Frame {
        device: DeviceId::new(dev).unwrap(),
        boot: 1,
        seq,
        time: Timestamp::Wall(1_763_769_600_000 + u64::from(seq) * 60_000),
        body: Body::Readings(heapless::Vec::from_slice(&[r]).unwrap()),
    };
    let mut buf = [0u8; MAX_SIGNED_LEN];
    encode_signed(&f, key, &mut buf).unwrap().to_vec()
}

fn minted_key(out_dir: &Path, id: &str) -> (String, DeviceKey) {
    let text = std::fs::read_to_string(out_dir.join(format!("{id}.secret"))).unwrap();
    let hex = text
        .lines()
        .find_map(|l| l.strip_prefix("COLDCHAIN_DEVICE_KEY="))
        .unwrap();
    (hex.to_string(), DeviceKey::from_hex(hex).unwrap())
}

/// The operations guide's claims: a minted device counts only after a daemon
/// restart; after a rotation (and restart) a frame signed with the old key
/// is refused as bad_tag and counted, one with the new key is stored.
#[test]
fn minting_and_rotating_a_key_with_the_real_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let mut daemon = Daemon::start(&dir.path().join("daemon"), broker.port, &[], "");
    wait_daemon_online(broker.port, &[]);
    let cfg = daemon.config.to_str().unwrap().to_string();
    let secrets = dir.path().join("secrets");
    let mint = |extra: &[&str]| {
        let mut args = vec![
            "--config",
            &cfg,
            "--no-passwd",
            "--quiet",
            "--out",
            secrets.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        script("mint-device.sh", &args, &[])
    };
    let topic = "coldchain/v1/dev/van-7/up";
    let publish = |seq: u32, key: &DeviceKey| {
        mosquitto_pub(broker.port, topic, &signed_frame("van-7", seq, key)).unwrap();
    };

    mint(&["van-7"]);
    let (old_hex, old) = minted_key(&secrets, "van-7");
    assert_eq!(mode(&secrets.join("van-7.secret")), 0o600);
    // Registering twice is refused.
    let again = Command::new("bash")
        .arg(deploy("mint-device.sh"))
        .args(["--config", &cfg, "--no-passwd", "--quiet", "--out"])
        .arg(&secrets)
        .arg("van-7")
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already"));

    // Not yet known to the running daemon.
    publish(0, &old);
    wait_for(T, "frame 0 handled", || {
        (daemon.stat("rejected.unknown_device") == 1).then_some(())
    });
    daemon.stop();
    daemon.restart();
    publish(1, &old);
    wait_for(T, "frame 1 stored", || {
        (daemon.stat("readings_stored") == 1).then_some(())
    });

    mint(&["--rotate", "van-7"]);
    let (new_hex, new) = minted_key(&secrets, "van-7");
    assert_ne!(old_hex, new_hex);
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        text.contains(&new_hex) && !text.contains(&old_hex),
        "{text}"
    );
    daemon.stop();
    daemon.restart();
    publish(2, &old); // signed before the rotation, delivered after
    publish(3, &new);
    wait_for(T, "frames 2 and 3 handled", || {
        (daemon.stat("acked") >= 2).then_some(())
    });
    assert_eq!(daemon.stat("rejected.bad_tag"), 1);
    let seqs: Vec<u64> = daemon
        .all_readings("van-7")
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 3]);
}

/// deploy/mosquitto/dev.conf as shipped (port and persistence directory
/// rewritten): the daemon's queued frames survive a broker restart while the
/// daemon is down.
#[test]
fn dev_conf_keeps_the_daemons_queue_across_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(deploy("mosquitto/dev.conf")).unwrap();
    let bdir = dir.path().join("broker");
    let persist = format!("{}/", bdir.display());
    let mut broker = Mosquitto::start_with_config(&bdir, |port| {
        let mut conf = shipped.clone();
        for (from, to) in [
            (
                "\nlistener 1883 127.0.0.1\n",
                format!("\nlistener {port} 127.0.0.1\n"),
            ),
            ("/var/lib/mosquitto/", persist.clone()),
        ] {
            assert!(conf.contains(from), "dev.conf no longer has {from:?}");
            conf = conf.replace(from, &to);
        }
        if nix::unistd::Uid::effective().is_root() {
            conf.push_str("user root\n");
        }
        conf
    });
    let mut daemon = Daemon::start(
        &dir.path().join("daemon"),
        broker.port,
        &[DeviceCfg::new("dev-a")],
        "",
    );
    wait_daemon_online(broker.port, &[]);
    let key = DeviceKey::from_hex(TEST_KEY).unwrap();
    let topic = "coldchain/v1/dev/dev-a/up";
    mosquitto_pub(broker.port, topic, &signed_frame("dev-a", 0, &key)).unwrap();
    wait_for(T, "frame 0 stored", || {
        (daemon.stat("readings_stored") == 1).then_some(())
    });
    daemon.stop();
    // Queued for the absent daemon, then the broker restarts.
    for seq in 1..=5 {
        mosquitto_pub(broker.port, topic, &signed_frame("dev-a", seq, &key)).unwrap();
    }
    broker.restart();
    daemon.restart();
    wait_for(T, "the queued frames delivered", || {
        (daemon.all_readings("dev-a").len() == 6).then_some(())
    });
    assert!(!broker.log().contains("Error"), "{}", broker.log());
}
