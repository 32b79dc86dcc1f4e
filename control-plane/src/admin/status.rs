//! The one place where the control plane's errors become gRPC statuses:
//! a command the state machine refused keeps its code (`InvalidArgument`,
//! `FailedPrecondition`, `NotFound`, `AlreadyExists`, `Aborted` …), a
//! membership change it cannot make is `FailedPrecondition`, a node short
//! of disk is `ResourceExhausted` (naming the directory), and anything
//! about the Raft node (no leader, stopped, removed, a leader change while
//! the write was in flight) is `Unavailable`, which clients may retry.

use crate::raft::node::ProposeError;
use crate::state::CommandError;
use pylon_common::ErrorCode;
use tonic::Status;

impl From<CommandError> for Status {
    fn from(error: CommandError) -> Status {
        Status::new(error.code.grpc_code(), error.message)
    }
}

impl From<ProposeError> for Status {
    fn from(error: ProposeError) -> Status {
        match error {
            ProposeError::Rejected(error) => error.into(),
            ProposeError::Invalid(message) => Status::new(ErrorCode::FailedPrecondition.grpc_code(), message),
            ProposeError::DiskFull { .. } => {
                Status::new(ErrorCode::ResourceExhausted.grpc_code(), error.to_string())
            }
            ProposeError::NoLeader
            | ProposeError::Removed
            | ProposeError::Stopped
            | ProposeError::LeaderChanged => Status::unavailable(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_their_code_and_node_trouble_is_retryable() {
        let refused = CommandError {
            code: ErrorCode::AlreadyExists,
            message: "api pets already exists".into(),
        };
        let cases = [
            (ProposeError::Rejected(refused), tonic::Code::AlreadyExists),
            (
                ProposeError::Invalid("last voter".into()),
                tonic::Code::FailedPrecondition,
            ),
            (ProposeError::NoLeader, tonic::Code::Unavailable),
            (ProposeError::LeaderChanged, tonic::Code::Unavailable),
            (ProposeError::Stopped, tonic::Code::Unavailable),
            (ProposeError::Removed, tonic::Code::Unavailable),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
    }
}
