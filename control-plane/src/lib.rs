//! Pylon's control plane: the source of truth for every API, stage,
//! deployment, API key, usage plan and domain name.
//!
//! A node runs the Raft Ready loop ([`raft::node`]) over a RocksDB log
//! ([`raft::storage`]), applies committed commands to a deterministic state
//! machine ([`state`]), and serves the gRPC admin API ([`admin`]) with health
//! and reflection. It streams versioned config snapshots to data planes
//! ([`publish`]), and, when asked, the operator console ([`console`]) and
//! the developer portal ([`portal`]) over the same admin API. It does not proxy traffic; that is the data plane's
//! job.

pub mod access;
pub mod admin;
pub mod auth;
pub mod clock;
pub mod console;
pub mod portal;
pub mod publish;
pub mod raft;
pub mod server;
pub mod state;
pub mod telemetry;

pub use server::{ConsoleListen, ControlPlaneConfig, PortalListen, ServeError, TlsFiles, serve};
