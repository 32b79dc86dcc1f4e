//! Replication: the Ready loop ([`node`]), the RocksDB log ([`storage`]) and
//! the peer transport ([`transport`]), and the watch on free disk space
//! ([`disk`]).

pub mod disk;
pub mod node;
pub mod storage;
pub mod transport;
