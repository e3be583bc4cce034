//! The allow-lists: one file per thread class, plus what every thread needs
//! (`base`) and what starting a thread needs (`spawning`).

mod api;
mod base;
mod block_worker;
mod console;
mod console_socket;
mod main_thread;
mod migration;
mod migration_in;
mod net_worker;
mod snapshot;
mod spawning;
mod state_capture;
mod throttle;
mod vcpu;
mod worker_setup;

use seccompiler::BackendError;

use crate::classes::ThreadClass;
use crate::rules::Rules;

/// What a thread of `class` does itself (without the base or its children).
fn own(class: ThreadClass) -> Result<Rules, BackendError> {
    match class {
        ThreadClass::Main => main_thread::rules(),
        ThreadClass::Vcpu => vcpu::rules(),
        ThreadClass::BlockWorker => block_worker::rules(),
        ThreadClass::NetWorker => net_worker::rules(),
        ThreadClass::Api => api::listener_rules(),
        ThreadClass::ApiConnection => api::connection_rules(),
        ThreadClass::Migration => migration::rules(),
        ThreadClass::MigrationThrottle => throttle::rules(),
        ThreadClass::Console => console::rules(),
        ThreadClass::ConsoleSocket => console_socket::rules(),
        ThreadClass::MigrationIncoming => migration_in::rules(),
        ThreadClass::Snapshot => snapshot::rules(),
    }
}

/// The base plus `class`'s own list.
pub(crate) fn own_rules(class: ThreadClass) -> Result<Rules, BackendError> {
    let mut rules = base::rules()?;
    rules.merge(own(class)?);
    Ok(rules)
}

/// Everything a thread of `class` must be allowed: its own list and, when it starts
/// threads, what starting them and running them needs (filters stack).
pub(crate) fn effective_rules(class: ThreadClass) -> Result<Rules, BackendError> {
    let mut rules = own_rules(class)?;
    if !class.spawns().is_empty() {
        rules.merge(spawning::rules()?);
        for &child in class.spawns() {
            rules.merge(effective_rules(child)?);
        }
    }
    Ok(rules)
}
