//! The `tern` command's library: every subcommand and what it is built from (VM
//! definitions, device arguments, console, runtime directories). `main.rs` only parses
//! the command line; the library also lets the fuzz targets reach the parsers of
//! untrusted input that live here (VM definition files).

pub mod api_client;
pub mod boot_entries;
pub mod bridge_tap;
pub mod console;
pub mod console_attach;
pub mod console_ring;
pub mod console_socket;
pub mod control;
pub mod definition;
pub mod device_args;
pub mod disk_boot;
pub mod guest_devices;
pub mod listen;
pub mod migrate;
pub mod next_boot;
pub mod panic_report;
pub mod receive;
pub mod receive_spec;
pub mod restore;
pub mod restore_disks;
pub mod run;
pub mod run_spec;
pub mod runtime_dir;
pub mod sd_notify;
pub mod session;
pub mod size;
pub mod snapshot;
pub mod vm_name;
