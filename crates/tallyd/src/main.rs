//! `tallyd`: a thin binary over the `tally-daemon` library and the crates below it.

#![forbid(unsafe_code)]

mod cli;
mod exec_check;
mod new_plugin;
mod store_copy;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, LogFormat};
use tally_domain::ErrorChain;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version go to stdout with success; a bad argument is a
            // user error (exit 1, as the README says), not clap's usual 2.
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(cli.log_format);
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // The whole cause chain on one line, each cause once: "reading x: No such file".
            let shown: &(dyn std::error::Error + 'static) = err.as_ref();
            eprintln!("error: {}", ErrorChain(shown));
            cli::exit_code(&err)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Colour only on a terminal: a log file, or a pipe into journald or a
    // collector, would otherwise carry escape codes. On a terminal the
    // subscriber's default stands, which is off when NO_COLOR is set.
    let builder = if std::io::stderr().is_terminal() {
        builder
    } else {
        builder.with_ansi(false)
    };
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
