//! What both planes agree on: the validated resource model, newtype ids and the
//! one table that turns an error code into a gRPC code and an HTTP status.
//!
//! Nothing here does I/O; the control plane validates with it before proposing,
//! the data plane compiles the same validated model into its routing table.

pub mod error;
pub mod ids;
pub mod model;
pub mod openapi;
pub mod quota;
pub mod snapshot;
pub mod traffic;
pub mod vtl;

pub use error::{ErrorCode, GatewayResponseType};
pub use model::{FieldError, ValidationErrors};
