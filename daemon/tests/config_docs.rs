//! The profile examples in the documentation are written exactly as
//! `coldchain.toml` takes them: the one in `daemon/engine/src/profile.rs`, the
//! commented one in `deploy/coldchain.example.toml` and the one in the
//! README each load as a config file and define the profile they show.

use coldchain_daemon::config::Config;

fn read(rel: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The lines of `text` from the first line that is `[[profiles]]` (after
/// `strip`) to the first one that is not part of the example.
fn block(text: &str, strip: &str, end: impl Fn(&str) -> bool) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.strip_prefix(strip).map(str::trim) == Some("[[profiles]]"))
        .unwrap_or_else(|| panic!("no [[profiles]] example (prefix {strip:?})"));
    lines[start..]
        .iter()
        .take_while(|l| !end(l))
        .map(|l| {
            let l = l.strip_prefix(strip).unwrap_or(l);
            l.strip_prefix(' ').unwrap_or(l)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn loads(what: &str, example: &str) {
    let cfg = Config::parse(example)
        .unwrap_or_else(|e| panic!("{what}: the profile example does not load: {e:#}\n{example}"));
    let p = cfg
        .profiles
        .iter()
        .find(|p| p.name == "fridge-48h")
        .unwrap_or_else(|| panic!("{what}: no profile fridge-48h\n{example}"));
    let zones = serde_json::to_string(p).unwrap();
    assert!(
        zones.contains("H1"),
        "{what}: the zone was not read: {zones}"
    );
}

#[test]
fn the_profile_doc_comment_is_a_coldchain_toml() {
    let src = read("engine/src/profile.rs");
    loads(
        "daemon/engine/src/profile.rs",
        &block(&src, "//!", |l| l.trim() == "//! ```"),
    );
}

#[test]
fn the_example_config_shows_the_profile_as_written() {
    let text = read("../deploy/coldchain.example.toml");
    loads(
        "deploy/coldchain.example.toml",
        &block(&text, "#", |l| !l.starts_with('#')),
    );
}

#[test]
fn the_readme_shows_the_profile_as_written() {
    let text = read("../README.md");
    loads("README.md", &block(&text, "", |l| l.trim() == "```"));
}
