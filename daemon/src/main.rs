//! `coldchain`: the Coldchain edge daemon and its command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run {
        /// Configuration file (TOML); see deploy/coldchain.example.toml.
        #[arg(long, short, env = "COLDCHAIN_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file and exit.
    CheckConfig {
        /// Configuration file (TOML).
        #[arg(long, short, env = "COLDCHAIN_CONFIG")]
        config: PathBuf,
    },
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run { config } => Config::load(&config).and_then(|cfg| {
            init_logging(cfg.daemon.log_format);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(coldchain_daemon::run::run(cfg))
        }),
        Cmd::CheckConfig { config } => Config::load(&config).map(|cfg| {
            println!(
                "{}: ok ({} devices, data in {})",
                config.display(),
                cfg.devices.len(),
                cfg.daemon.data_dir.display()
            );
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coldchain: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
