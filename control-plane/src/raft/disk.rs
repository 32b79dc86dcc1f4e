//! Free space on the data directory's filesystem, watched so that a node
//! stops taking writes *before* its disk is full instead of failing in the
//! middle of one (like etcd's `NOSPACE` alarm).
//!
//! Below the reserve (`--min-free-space-mb`, default 64 MiB) the node refuses
//! new writes with `RESOURCE_EXHAUSTED` naming the directory, hands its
//! leadership to another voter, stops appending entries from the leader
//! (as if those messages were lost: Raft copes) and does not campaign;
//! reads go on. It takes part again once free space is back above the
//! reserve plus 10 % (so it does not flap at the edge). An actual write
//! failure (the reserve was not enough, or an fsync failed) still stops
//! the node: a write that may be lost must never be acknowledged.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The default reserve, MiB.
pub const DEFAULT_MIN_FREE_MB: u64 = 64;
/// How often free space is measured.
const EVERY: Duration = Duration::from_secs(1);

/// The data directory's free space against its reserve.
#[derive(Debug)]
pub struct DiskGuard {
    path: PathBuf,
    reserve: u64,
    low: bool,
    free: u64,
    checked: Option<Instant>,
    /// The last `check` measured (rather than waiting for its second).
    measured: bool,
}

/// A change the last check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    BecameLow,
    Recovered,
}

impl DiskGuard {
    /// Watches `path` (the data directory) with `reserve_bytes` kept free
    /// (0: never low).
    pub fn new(path: &Path, reserve_bytes: u64) -> DiskGuard {
        DiskGuard {
            path: path.to_owned(),
            reserve: reserve_bytes,
            low: false,
            free: u64::MAX,
            checked: None,
            measured: false,
        }
    }

    /// Whether the disk is below its reserve (as of the last check).
    pub fn is_low(&self) -> bool {
        self.low
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes available to the node at the last check.
    pub fn free(&self) -> u64 {
        self.free
    }

    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// Whether the last [`DiskGuard::check`] measured (about once a second).
    pub fn just_measured(&self) -> bool {
        self.measured
    }

    /// Measures again when a second has passed; returns what changed. A
    /// filesystem that cannot be measured counts as not low (the writes
    /// themselves will tell).
    pub fn check(&mut self) -> Option<Change> {
        self.measured = false;
        if self.reserve == 0 || self.checked.is_some_and(|at| at.elapsed() < EVERY) {
            return None;
        }
        self.checked = Some(Instant::now());
        self.measured = true;
        let Ok(stat) = rustix::fs::statvfs(&self.path) else {
            return None;
        };
        self.free = stat.f_bavail.saturating_mul(stat.f_frsize);
        self.judge()
    }

    /// Measures now, whatever the time since the last check (before a
    /// decision that must not rest on a second-old figure, such as taking
    /// over leadership).
    pub fn check_now(&mut self) -> Option<Change> {
        self.checked = None;
        self.check()
    }

    fn judge(&mut self) -> Option<Change> {
        if !self.low && self.free < self.reserve {
            self.low = true;
            Some(Change::BecameLow)
        } else if self.low && self.free >= self.reserve + self.reserve / 10 {
            self.low = false;
            Some(Change::Recovered)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_below_the_reserve_and_back_only_with_a_margin() {
        let mut guard = DiskGuard::new(Path::new("/"), 100);
        let mut at = |free| {
            guard.free = free;
            guard.judge()
        };
        assert_eq!(at(150), None);
        assert_eq!(at(99), Some(Change::BecameLow));
        assert_eq!(at(105), None, "within the 10 % margin: still low");
        assert_eq!(at(110), Some(Change::Recovered));
    }

    #[test]
    fn the_real_filesystem_can_be_measured() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut guard = DiskGuard::new(dir.path(), 1);
        assert_eq!(guard.check(), None);
        assert!(guard.free() > 1 && guard.free() < u64::MAX);
    }
}
