//! Membership: cluster status across members, adding and removing voters.

use crate::raft::node::{NodeHandle, ProposeError};
use crate::raft::transport::Transport;
use pylon_proto::admin::v1::{ClusterStatus, MemberStatus};
use pylon_proto::raft::v1::{MemberInfo, NodeStatus};
use raft::eraftpb::ConfChangeType;
use std::time::{Duration, Instant};
use tonic::Status;

const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(10);

fn member(status: &NodeStatus, address: String, voter: bool) -> MemberStatus {
    MemberStatus {
        node_id: status.node_id,
        raft_address: address,
        role: status.role.clone(),
        term: status.term,
        leader_id: status.leader_id,
        commit_index: status.commit_index,
        applied_index: status.applied_index,
        config_version: status.config_version,
        first_index: status.first_index,
        last_index: status.last_index,
        snapshot_index: status.snapshot_index,
        voter,
        error: String::new(),
    }
}

/// Asks every member for its own view; unreachable members are listed as such.
pub async fn status(node: &NodeHandle, transport: &Transport) -> ClusterStatus {
    let local = node.status();
    let addresses = transport.addresses();
    let ids: Vec<(u64, bool)> = local
        .voters
        .iter()
        .map(|id| (*id, true))
        .chain(local.learners.iter().map(|id| (*id, false)))
        .collect();
    let mut members = Vec::with_capacity(ids.len());
    let queries = ids.iter().map(|(id, voter)| {
        let address = addresses.get(id).cloned().unwrap_or_default();
        let local = &local;
        async move {
            if *id == local.node_id {
                return member(local, address, *voter);
            }
            match transport.peer_status(&address).await {
                Ok(status) => member(&status, address, *voter),
                Err(error) => MemberStatus {
                    node_id: *id,
                    raft_address: address,
                    role: "UNREACHABLE".into(),
                    voter: *voter,
                    error,
                    ..Default::default()
                },
            }
        }
    });
    members.extend(futures::future::join_all(queries).await);
    ClusterStatus {
        leader_id: local.leader_id,
        members,
        cluster_id: node.shared.replica.state().cluster_id().to_owned(),
    }
}

async fn change(node: &NodeHandle, change_type: ConfChangeType, member: MemberInfo) -> Result<(), Status> {
    let deadline = Instant::now() + MEMBERSHIP_TIMEOUT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, node.change_membership(change_type, member.clone())).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(ProposeError::NoLeader)) if Instant::now() + Duration::from_millis(100) < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                return Err(Status::unavailable(
                    "the membership change was not confirmed in time (another change pending, or no quorum)",
                ));
            }
        }
    }
}

pub async fn add_member(
    node: &NodeHandle,
    origin: &super::Origin,
    node_id: u64,
    raft_address: &str,
) -> Result<(), Status> {
    if node_id == 0 {
        return Err(Status::invalid_argument("node_id: must not be 0"));
    }
    let valid_address = raft_address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !valid_address {
        return Err(Status::invalid_argument("raft_address: must be HOST:PORT"));
    }
    let status = node.status();
    if status.voters.contains(&node_id) {
        // The same request again (a retry after a lost answer) succeeds.
        if status.addresses.get(&node_id).is_some_and(|a| a == raft_address) {
            return Ok(());
        }
        return Err(Status::already_exists(format!(
            "node {node_id} is already a member, at another address"
        )));
    }
    let member = MemberInfo {
        node_id,
        raft_address: raft_address.to_owned(),
        actor: Some(origin.actor.clone()),
        at: Some(crate::clock::now()),
    };
    change(node, ConfChangeType::AddNode, member).await
}

pub async fn remove_member(node: &NodeHandle, origin: &super::Origin, node_id: u64) -> Result<(), Status> {
    let status = node.status();
    if !status.voters.contains(&node_id) && !status.learners.contains(&node_id) {
        return Err(Status::not_found(format!("node {node_id} is not a member")));
    }
    if status.voters.len() == 1 && status.voters.contains(&node_id) {
        return Err(Status::failed_precondition("cannot remove the last voter"));
    }
    if status.leader_id == node_id {
        hand_over_leadership(node, node_id, &status.voters).await?;
    }
    let member = MemberInfo {
        node_id,
        raft_address: String::new(),
        actor: Some(origin.actor.clone()),
        at: Some(crate::clock::now()),
    };
    change(node, ConfChangeType::RemoveNode, member).await
}

/// Moves leadership away from a leader about to be removed, so the cluster
/// never waits out an election timeout for a leader that is leaving.
async fn hand_over_leadership(node: &NodeHandle, leaving: u64, voters: &[u64]) -> Result<(), Status> {
    let Some(successor) = voters.iter().copied().find(|id| *id != leaving) else {
        return Err(Status::failed_precondition(
            "no other voter to take over leadership",
        ));
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let leader = node.status().leader_id;
        if leader != 0 && leader != leaving {
            return Ok(());
        }
        node.transfer_leader(successor);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(Status::unavailable(format!(
        "node {leaving} is the leader and did not hand leadership to node {successor} in time; retry"
    )))
}
