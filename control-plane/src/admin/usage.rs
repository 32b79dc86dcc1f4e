//! Quota usage is counted by the data planes in their shared state (Redis,
//! or in-process for `pylon dev`), not in the Raft log: a counter bumped on
//! every request does not belong in a replicated config store. The admin API
//! reads and resets it through a [`UsageStore`] the binary wires in.

use futures::future::BoxFuture;
use pylon_common::quota::Window;

/// The data planes' quota counters, as the admin API sees them. Counters
/// are per cluster (`cluster`: the id `pylon cluster status` prints), so
/// clusters sharing one Redis never count on each other's.
pub trait UsageStore: Send + Sync + 'static {
    /// Requests counted for `key_id` under `plan` in `window`.
    fn used<'a>(
        &'a self,
        cluster: &'a str,
        plan: &'a str,
        key_id: &'a str,
        window: Window,
    ) -> BoxFuture<'a, Result<u64, String>>;
    /// Forgets what `key_id` used in the current period.
    fn reset<'a>(
        &'a self,
        cluster: &'a str,
        plan: &'a str,
        key_id: &'a str,
    ) -> BoxFuture<'a, Result<(), String>>;
}

impl std::fmt::Debug for dyn UsageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UsageStore")
    }
}
