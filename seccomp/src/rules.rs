//! A syscall allow-list under construction: syscall number -> allowed always, or
//! only when one of its argument rules matches. Lists merge (a thread's own list
//! plus those of the classes it starts).

use std::collections::BTreeMap;

use seccompiler::{BackendError, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

/// When a syscall is allowed.
enum Allowed {
    Always,
    /// When any of these rules (each an AND of argument conditions) matches.
    When(Vec<SeccompRule>),
}

/// An allow-list.
#[derive(Default)]
pub(crate) struct Rules(BTreeMap<i64, Allowed>);

impl Rules {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Allows `syscall` whatever its arguments.
    pub(crate) fn allow(&mut self, syscall: i64) -> &mut Self {
        self.0.insert(syscall, Allowed::Always);
        self
    }

    /// Allows `syscall` when all `conditions` hold (several calls: when any set holds).
    pub(crate) fn allow_when(&mut self, syscall: i64, conditions: Vec<SeccompCondition>) -> Result<&mut Self, BackendError> {
        let rule = SeccompRule::new(conditions)?;
        match self.0.entry(syscall).or_insert_with(|| Allowed::When(Vec::new())) {
            Allowed::Always => {}
            Allowed::When(rules) => rules.push(rule),
        }
        Ok(self)
    }

    /// Allows `openat` for reading only: no write access, no create, no truncate.
    pub(crate) fn allow_read_only_open(&mut self) -> Result<&mut Self, BackendError> {
        let writes = (libc::O_ACCMODE | libc::O_CREAT | libc::O_TRUNC) as u64;
        self.allow_when(libc::SYS_openat, vec![arg_clear(2, writes)?])
    }

    /// Allows `ioctl` with any of these request numbers, on any descriptor.
    pub(crate) fn allow_ioctls(&mut self, requests: &[u64]) -> Result<&mut Self, BackendError> {
        for &request in requests {
            self.allow_when(libc::SYS_ioctl, vec![arg_eq(1, request)?])?;
        }
        Ok(self)
    }

    /// Adds everything `other` allows.
    pub(crate) fn merge(&mut self, other: Rules) -> &mut Self {
        for (syscall, allowed) in other.0 {
            match allowed {
                Allowed::Always => {
                    self.allow(syscall);
                }
                Allowed::When(rules) => match self.0.entry(syscall).or_insert_with(|| Allowed::When(Vec::new())) {
                    Allowed::Always => {}
                    Allowed::When(mine) => {
                        for rule in rules {
                            if !mine.contains(&rule) {
                                mine.push(rule);
                            }
                        }
                    }
                },
            }
        }
        self
    }

    /// The syscall numbers on the list.
    pub(crate) fn syscalls(&self) -> Vec<i64> {
        self.0.keys().copied().collect()
    }

    /// The list as seccompiler takes it (an empty rule list: allowed always).
    pub(crate) fn into_map(self) -> BTreeMap<i64, Vec<SeccompRule>> {
        self.0
            .into_iter()
            .map(|(syscall, allowed)| match allowed {
                Allowed::Always => (syscall, Vec::new()),
                Allowed::When(rules) => (syscall, rules),
            })
            .collect()
    }
}

/// Argument `index` (its low 32 bits: descriptors, flags, ioctl requests, which the
/// kernel reads as 32-bit values) equals `value`.
pub(crate) fn arg_eq(index: u8, value: u64) -> Result<SeccompCondition, BackendError> {
    SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
}

/// Argument `index` (low 32 bits) has none of the bits in `mask` set.
pub(crate) fn arg_clear(index: u8, mask: u64) -> Result<SeccompCondition, BackendError> {
    SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::MaskedEq(mask), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_the_wider_permission() {
        let mut a = Rules::new();
        a.allow_when(libc::SYS_write, vec![arg_eq(0, 2).unwrap()]).unwrap();
        let mut b = Rules::new();
        b.allow(libc::SYS_write);
        b.allow_when(libc::SYS_ioctl, vec![arg_eq(1, 7).unwrap()]).unwrap();
        a.merge(b);
        let map = a.into_map();
        assert!(map[&libc::SYS_write].is_empty(), "unconditional wins");
        assert_eq!(map[&libc::SYS_ioctl].len(), 1);
    }

    #[test]
    fn conditional_rules_accumulate_without_duplicates() {
        let mut a = Rules::new();
        a.allow_ioctls(&[1, 2]).unwrap();
        let mut b = Rules::new();
        b.allow_ioctls(&[2, 3]).unwrap();
        a.merge(b);
        assert_eq!(a.into_map()[&libc::SYS_ioctl].len(), 3);
    }
}
