//! The thread classes, and which classes each one starts.

use std::fmt;

/// A kind of tern thread, each with its own syscall allow-list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThreadClass {
    /// The machine's owner once it is built: `Machine::wait_for_exit` (API requests,
    /// pause/resume, console flushing, starting a migration, tearing down).
    Main,
    /// A vCPU: `KVM_RUN` and the device exits it routes (may activate devices).
    Vcpu,
    /// A virtio-blk worker.
    BlockWorker,
    /// A virtio-net worker.
    NetWorker,
    /// The control socket's listener.
    Api,
    /// One control-socket connection.
    ApiConnection,
    /// The migration source.
    Migration,
    /// The migration's auto-converge throttle.
    MigrationThrottle,
    /// The console's stdin forwarder.
    Console,
    /// The console socket (`--serial socket=PATH`): its clients' output and input.
    ConsoleSocket,
    /// The migration destination's reader: parses everything the source sends.
    MigrationIncoming,
    /// Writes a snapshot directory (`tern snapshot`).
    Snapshot,
}

impl ThreadClass {
    /// Every class.
    pub const ALL: [ThreadClass; 12] = [
        ThreadClass::Main,
        ThreadClass::Vcpu,
        ThreadClass::BlockWorker,
        ThreadClass::NetWorker,
        ThreadClass::Api,
        ThreadClass::ApiConnection,
        ThreadClass::Migration,
        ThreadClass::MigrationThrottle,
        ThreadClass::Console,
        ThreadClass::ConsoleSocket,
        ThreadClass::MigrationIncoming,
        ThreadClass::Snapshot,
    ];

    /// The classes of the threads this class starts while confined: their
    /// syscalls must pass this class's filter too, since filters stack.
    pub fn spawns(self) -> &'static [ThreadClass] {
        match self {
            // A `migrate` request starts the migration thread, a `snapshot` request
            // the snapshot thread.
            ThreadClass::Main => &[ThreadClass::Migration, ThreadClass::Snapshot],
            // A driver that sets DRIVER_OK activates its device, which starts a worker.
            ThreadClass::Vcpu => &[ThreadClass::BlockWorker, ThreadClass::NetWorker],
            ThreadClass::Api => &[ThreadClass::ApiConnection],
            // Auto-converge; and the workers parked for the final copy are started
            // again when the migration fails.
            ThreadClass::Migration => &[ThreadClass::MigrationThrottle, ThreadClass::BlockWorker, ThreadClass::NetWorker],
            // The workers parked for the capture are started again.
            ThreadClass::Snapshot => &[ThreadClass::BlockWorker, ThreadClass::NetWorker],
            ThreadClass::BlockWorker
            | ThreadClass::NetWorker
            | ThreadClass::ApiConnection
            | ThreadClass::MigrationThrottle
            | ThreadClass::Console
            | ThreadClass::ConsoleSocket
            | ThreadClass::MigrationIncoming => &[],
        }
    }

    /// Position in [`ThreadClass::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Short name, as in thread names and docs.
    pub fn name(self) -> &'static str {
        match self {
            ThreadClass::Main => "main",
            ThreadClass::Vcpu => "vcpu",
            ThreadClass::BlockWorker => "block-worker",
            ThreadClass::NetWorker => "net-worker",
            ThreadClass::Api => "api",
            ThreadClass::ApiConnection => "api-connection",
            ThreadClass::Migration => "migration",
            ThreadClass::MigrationThrottle => "migration-throttle",
            ThreadClass::Console => "console",
            ThreadClass::ConsoleSocket => "console-socket",
            ThreadClass::MigrationIncoming => "migration-in",
            ThreadClass::Snapshot => "snapshot",
        }
    }
}

impl fmt::Display for ThreadClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_declaration_order() {
        for (i, class) in ThreadClass::ALL.iter().enumerate() {
            assert_eq!(class.index(), i, "{class}");
        }
    }
}
