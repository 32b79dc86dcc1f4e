//! This node's replica of the state machine, as the rest of the process
//! reads it: the admin API, the publisher and telemetry hold a [`Replica`],
//! never the Raft node. Only the Raft loop writes it, applying committed
//! entries in log order.

use super::State;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::watch;

/// The state as applied on this node, and a watch on the config version
/// data planes serve.
#[derive(Debug)]
pub struct Replica {
    state: RwLock<State>,
    /// The config version of the last applied change to what data planes
    /// serve (API edits without a deployment do not count).
    served_version: watch::Sender<u64>,
}

// A panic while a lock was held cannot leave the state half-written (it is
// only changed by `State::commit`, which cannot fail), so a poisoned lock is
// used as is.
impl Replica {
    pub fn new(state: State) -> Replica {
        Replica {
            served_version: watch::Sender::new(state.config_version()),
            state: RwLock::new(state),
        }
    }

    /// The state as of the last entry applied here (it may lag the leader:
    /// callers that must not read stale state wait for a read index first).
    pub fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// For the Raft loop only.
    pub fn state_mut(&self) -> RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes whenever an applied change may alter what data planes serve.
    pub fn watch_served_version(&self) -> watch::Receiver<u64> {
        self.served_version.subscribe()
    }

    /// Tells the watchers (for the Raft loop, after applying).
    pub fn publish_served_version(&self) {
        let version = self.state().config_version();
        self.served_version.send_if_modified(|current| {
            let changed = *current != version;
            *current = version;
            changed
        });
    }
}
