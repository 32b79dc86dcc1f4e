//! Replication: the Ready loop ([`node`]), the RocksDB log ([`storage`]) and
//! the peer transport ([`transport`]).

pub mod node;
pub mod storage;
pub mod transport;
