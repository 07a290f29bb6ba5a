//! `coldchain`: the Coldchain edge daemon and its command line.
//!
//! `coldchain run` is the daemon; every other subcommand talks to a running
//! daemon through its HTTP API (see `cli.rs` for the exit codes).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coldchain_daemon::cli::{self, ClientCmd, ConfigArg};
use coldchain_daemon::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "coldchain",
    version,
    about = "Coldchain edge daemon: cold-chain monitoring for cell-therapy shipments"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at start; boxing would only obscure the clap derive"
)]
#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run(ConfigArg),
    /// Check a configuration file and exit.
    CheckConfig(ConfigArg),
    /// Restore a backup made with `coldchain export` into an empty data
    /// directory (the daemon must be stopped).
    Import {
        /// The backup file (JSON lines).
        #[arg(long)]
        from: PathBuf,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    #[command(flatten)]
    Client(ClientCmd),
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Human => b.init(),
    }
}

fn need_config(arg: &ConfigArg) -> anyhow::Result<Config> {
    let path = arg
        .config
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("--config FILE is required (or set COLDCHAIN_CONFIG)"))?;
    Config::load(path)
}

fn import(cfg: &Config, from: &PathBuf) -> anyhow::Result<()> {
    use anyhow::Context;
    let dir = cfg.daemon.data_dir.join("db");
    if cfg.store.postgres_url.is_none() && dir.exists() && std::fs::read_dir(&dir)?.next().is_some()
    {
        anyhow::bail!(
            "{} is not empty: restore only into an empty data directory (move the old one away first)",
            dir.display()
        );
    }
    // Line by line: a backup can be larger than memory.
    let file = std::io::BufReader::new(
        std::fs::File::open(from).with_context(|| format!("cannot read {}", from.display()))?,
    );
    let store = coldchain_daemon::store::KvStore::open_configured(cfg)?;
    let db = store.db();
    if store.is_postgres() && !db.tree_names()?.is_empty() {
        anyhow::bail!(
            "the database at store.postgres_url is not empty: restore only into an empty database"
        );
    }
    let mut n = 0u64;
    for (i, line) in std::io::BufRead::lines(file).enumerate() {
        let line =
            line.with_context(|| format!("cannot read {} line {}", from.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not JSON", from.display(), i + 1))?;
        let (Some(tree), Some(k), Some(val)) =
            (v["tree"].as_str(), v["key"].as_str(), v["value"].as_str())
        else {
            let hint = if v.get("device").is_some() && v.get("seq").is_some() {
                " (this is a readings export, `coldchain export --readings`; restore from a backup made with `coldchain export`)"
            } else {
                ""
            };
            anyhow::bail!(
                "{} line {}: expected {{tree, key, value}}{hint}",
                from.display(),
                i + 1
            );
        };
        let t = db.open_tree(tree)?;
        t.insert(hex::decode(k)?, hex::decode(val)?)?;
        n += 1;
    }
    use coldchain_daemon::store::Store;
    store.sync()?;
    match &cfg.store.postgres_url {
        Some(url) => println!(
            "restored {n} entries into {}",
            coldchain_daemon::kv::pg_display_url(url)
        ),
        None => println!("restored {n} entries into {}", dir.display()),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run(arg) => need_config(&arg).and_then(|cfg| {
            init_logging(cfg.daemon.log_format);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(coldchain_daemon::run::run(cfg))
        }),
        Cmd::CheckConfig(arg) => need_config(&arg).map(|cfg| {
            println!(
                "ok: {} devices, {} webhooks, data in {}",
                cfg.devices.len(),
                cfg.webhooks.len(),
                cfg.daemon.data_dir.display()
            );
        }),
        Cmd::Import { from, cfg } => need_config(&cfg).and_then(|cfg| import(&cfg, &from)),
        Cmd::Client(c) => {
            return match cli::run(c) {
                Ok(()) => ExitCode::SUCCESS,
                Err(f) => {
                    eprintln!("coldchain: {}", f.message);
                    ExitCode::from(f.code)
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coldchain: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
