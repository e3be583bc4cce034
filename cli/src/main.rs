//! The `tern` command line.

mod console;
mod run;
mod size;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// tern: a KVM virtual machine monitor that boots Linux directly.
#[derive(Parser)]
#[command(name = "tern", version, about, propagate_version = true)]
struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a Linux kernel in a new VM and run it until the guest powers off.
    Run(run::RunArgs),
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Run(args) => run::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            console::restore_terminal();
            // One line: the error and its causes, no backtrace.
            let mut msg = format!("tern: error: {e}");
            // Causes not already spelled out by the message above them.
            for cause in e.chain().skip(1) {
                let text = cause.to_string();
                if !msg.contains(&text) {
                    msg.push_str(&format!(": {text}"));
                }
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}
