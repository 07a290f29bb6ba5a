//! Each subcommand's `--help` lists its own flags only: `run`, `check-config`
//! and `import` take the config file; the subcommands that talk to a running
//! daemon take `--api`, `--token`, `--config` and `--json`.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_coldchain"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run coldchain");
    assert!(out.status.success(), "coldchain {args:?} --help: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8 help")
}

const CLIENT_FLAGS: [&str; 4] = ["--api", "--token", "--config", "--json"];

#[test]
fn daemon_side_subcommands_list_only_the_config_file() {
    for cmd in [&["run"][..], &["check-config"], &["import"]] {
        let h = help(cmd);
        assert!(h.contains("--config"), "coldchain {cmd:?} --help:\n{h}");
        for flag in ["--api", "--token", "--json"] {
            assert!(
                !h.contains(flag),
                "coldchain {cmd:?} --help lists the client-only flag {flag}:\n{h}"
            );
        }
    }
    assert!(help(&["import"]).contains("--from"));
}

#[test]
fn client_subcommands_list_how_to_reach_the_daemon() {
    for cmd in [
        &["status"][..],
        &["alerts"],
        &["export"],
        &["shipment", "create"],
        &["device", "reenroll"],
        &["audit", "verify"],
    ] {
        let h = help(cmd);
        for flag in CLIENT_FLAGS {
            assert!(
                h.contains(flag),
                "coldchain {cmd:?} --help lacks {flag}:\n{h}"
            );
        }
    }
    let h = help(&["device", "reenroll"]);
    for flag in ["--reason", "--new-key", "--key", "--by"] {
        assert!(
            h.contains(flag),
            "device reenroll --help lacks {flag}:\n{h}"
        );
    }
    assert!(help(&["export"]).contains("--readings"));
}

#[test]
fn top_level_help_lists_no_client_flags() {
    let h = help(&[]);
    for flag in CLIENT_FLAGS {
        assert!(!h.contains(flag), "coldchain --help lists {flag}:\n{h}");
    }
}
