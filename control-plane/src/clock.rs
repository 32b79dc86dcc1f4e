//! The wall clock, read only where a command is proposed or a snapshot
//! published — never inside the state machine.

use pylon_proto::wkt::Timestamp;
use std::time::SystemTime;

/// Now, as a protobuf timestamp (the epoch if the clock is before it).
pub fn now() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}
