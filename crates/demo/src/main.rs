//! `tally-demo`: the whole pipeline offline, on bundled data and simulated
//! platforms. A binary of its own so that `tallyd` carries no simulator and no
//! published token.

#![forbid(unsafe_code)]

mod demo;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

/// The whole tally pipeline offline: simulated platforms, generated forms and
/// sheets, the real plugins and the real daemon.
#[derive(Parser, Debug)]
#[command(name = "tally-demo", version)]
struct Args {
    /// Where the daemon listens. An address other than loopback needs --token.
    #[arg(long, default_value = "127.0.0.1:9470")]
    listen: SocketAddr,
    /// Where the demo keeps its store and forms (default: a fresh temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The API token for write endpoints, instead of the published `demo-token`.
    /// Required when --listen is not a loopback address.
    #[arg(long, env = "TALLY_DEMO_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(demo::run(args.listen, args.data_dir, args.token)));
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
