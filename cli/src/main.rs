//! The `tern` command line: parses the subcommand and runs it (the commands
//! themselves live in the `tern` library, `lib.rs`).

use tern::{boot_entries, console, console_attach, control, listen, migrate, panic_report, receive, restore, run, snapshot};

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
    /// Wait for a live migration from another tern and run the guest here.
    Receive(receive::ReceiveArgs),
    /// Live-migrate a running VM (by name or control socket) to `tern receive` or a
    /// host's `tern listen`.
    Migrate(migrate::MigrateArgs),
    /// Write a snapshot of a running VM (by name or control socket) to a directory.
    Snapshot(snapshot::SnapshotArgs),
    /// Run a guest from a snapshot directory, from the instant it was taken.
    Restore(restore::RestoreArgs),
    /// Accept live migrations for any VM defined on this host (--defs, default
    /// /etc/tern): each runs from its definition, in a `tern receive` of its own.
    Listen(listen::ListenArgs),
    /// Attach to the serial console of a running tern started with --serial
    /// socket=PATH (Ctrl-A x detaches; the guest keeps running).
    ///
    /// Shows the guest's recent output (tern keeps the last 64 KiB), then live output;
    /// keys go to the guest. Ctrl-A x detaches, Ctrl-A Ctrl-A sends Ctrl-A. One client
    /// at a time: tern refuses a second with one line. Without a terminal, bytes are
    /// copied as they are and the end of stdin detaches.
    Console(console_attach::ConsoleArgs),
    /// List what a disk image can boot (grub.cfg, BLS entries or /vmlinuz links), read-only.
    BootEntries(boot_entries::BootEntriesArgs),
    /// List the named VMs running on this host: name, state, vCPUs, memory, uptime, pid.
    List(control::ListArgs),
    /// Show a running VM's state, vCPUs, memory, uptime, boot count and pid.
    Info(control::InfoArgs),
    /// Pause a running VM's vCPUs.
    Pause(control::Target),
    /// Resume a paused VM.
    Resume(control::Target),
    /// Press the VM's ACPI power button and wait (--timeout) for the guest to power
    /// off; stop it after that (status 1).
    Shutdown(control::ShutdownArgs),
    /// End a VM at once (no guest shutdown).
    Stop(control::Target),
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
    // Colour only for a person at a terminal, not in log files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

fn main() -> ExitCode {
    // A panic anywhere ends tern at once (see panic_report.rs).
    panic_report::install();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Receive(args) => receive::receive(args),
        Command::Migrate(args) => migrate::migrate(args),
        Command::Snapshot(args) => snapshot::snapshot(args),
        Command::Restore(args) => restore::restore(args),
        Command::Listen(args) => listen::listen(args, cli.verbose),
        Command::Console(args) => console_attach::attach(args),
        Command::BootEntries(args) => boot_entries::boot_entries(args, cli.verbose > 0),
        Command::List(args) => control::list(args),
        Command::Info(args) => control::info(args),
        Command::Pause(target) => control::simple(target, vmm::events::ApiCommand::Pause),
        Command::Resume(target) => control::simple(target, vmm::events::ApiCommand::Resume),
        Command::Shutdown(args) => control::shutdown(args),
        Command::Stop(target) => control::stop(target),
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
