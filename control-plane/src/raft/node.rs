//! The Raft node: one thread that owns the `RawNode`, the storage and the state
//! machine, driven by a Ready loop modelled on raft-rs's `five_mem_node` example.
//!
//! Everything else talks to it through [`NodeHandle`]: proposals and read-index
//! requests carry their own reply channel; peer messages arrive from the
//! transport. The thread never blocks on the network — outgoing messages are
//! handed to [`Transport`], which sends them from tokio tasks.

use super::storage::{RocksStorage, StorageFailure};
use super::transport::Transport;
use crate::state::{Applied, CommandError, Replica, State};
use prost::Message as _;
use protobuf::Message as _;
use pylon_proto::raft::v1::{Command, MemberInfo, NodeStatus, StateImage};
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType, Message, Snapshot};
use raft::{Config, RawNode, SnapshotStatus, StateRole, Storage as _};
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What runs before the Raft thread ends the process, set by
/// [`before_fatal_exit`].
static BEFORE_FATAL_EXIT: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what runs before the Raft thread ends the process because the node
/// can no longer be trusted (its loop panicked, or a write to its log
/// failed; exit code 70). The binary writes its queued log lines there, the
/// one saying why among them; the hook must return promptly. Only the first
/// call counts.
pub fn before_fatal_exit(hook: fn()) {
    let _ = BEFORE_FATAL_EXIT.set(hook);
}

/// Ends the process with exit code 70 (`EX_SOFTWARE`) after the hook of
/// [`before_fatal_exit`].
fn exit_fatal() -> ! {
    if let Some(hook) = BEFORE_FATAL_EXIT.get() {
        hook();
    }
    std::process::exit(70);
}

/// Timer settings. With the defaults an election starts 0.5–1 s after the last
/// heartbeat from a leader.
#[derive(Clone, Debug)]
pub struct RaftTimers {
    pub tick: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
}

impl Default for RaftTimers {
    fn default() -> Self {
        RaftTimers {
            tick: Duration::from_millis(50),
            election_ticks: 10,
            heartbeat_ticks: 2,
        }
    }
}

/// Why a proposal or read did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("no leader is known yet")]
    NoLeader,
    #[error(transparent)]
    Rejected(#[from] CommandError),
    #[error("this node was removed from the cluster")]
    Removed,
    #[error("the raft node has stopped")]
    Stopped,
    /// The leader the proposal went to lost its leadership before the entry was
    /// applied here: it may or may not be committed by the new leader.
    #[error("the leader changed while the write was in flight; it may or may not have been applied")]
    LeaderChanged,
    #[error("{0}")]
    Invalid(String),
    /// The data directory's disk is below its reserve (see [`super::disk`]).
    #[error(
        "the disk of {path} is almost full ({free_mib} MiB free, {reserve_mib} MiB reserved): this node takes no writes until {resume_mib} MiB are free"
    )]
    DiskFull {
        path: String,
        free_mib: u64,
        reserve_mib: u64,
        resume_mib: u64,
    },
}

pub(crate) enum NodeMsg {
    Propose {
        command: Box<Command>,
        reply: oneshot::Sender<Result<Applied, ProposeError>>,
    },
    ConfChange {
        change_type: ConfChangeType,
        member: MemberInfo,
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
    ReadIndex {
        reply: oneshot::Sender<Result<u64, ProposeError>>,
    },
    Raft(Box<Message>),
    /// Ask the leader to hand leadership to this voter.
    TransferLeader(u64),
    Unreachable(u64),
    SnapshotSent {
        to: u64,
        ok: bool,
    },
    /// A snapshot job finished writing (or failed to write) its snapshot.
    SnapshotWritten(Result<Box<Snapshot>, String>),
}

/// What the rest of the process may read without going through the loop:
/// the replica of the state machine, and the node's Raft status.
pub struct Shared {
    pub id: u64,
    pub replica: Arc<Replica>,
    status: Mutex<NodeStatus>,
    /// The data directory's disk is below its reserve (see [`super::disk`]).
    pub disk_low: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// This node's Raft status as of its last Ready.
    pub fn status(&self) -> NodeStatus {
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_status(&self, status: NodeStatus) {
        *self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = status;
    }
}

/// A cheap, cloneable way to reach the Raft thread.
#[derive(Clone)]
pub struct NodeHandle {
    tx: Sender<NodeMsg>,
    pub shared: Arc<Shared>,
}

impl NodeHandle {
    pub(crate) fn send(&self, msg: NodeMsg) -> bool {
        self.tx.send(msg).is_ok()
    }

    /// Proposes `command` once and waits until it is applied on this node.
    pub async fn propose_once(&self, command: Command) -> Result<Applied, ProposeError> {
        let (reply, rx) = oneshot::channel();
        if !self.send(NodeMsg::Propose {
            command: Box::new(command),
            reply,
        }) {
            return Err(ProposeError::Stopped);
        }
        rx.await.unwrap_or(Err(ProposeError::Stopped))
    }

    /// Asks the leader for a read index and waits until this node applied it.
    pub async fn read_index_once(&self) -> Result<u64, ProposeError> {
        let (reply, rx) = oneshot::channel();
        if !self.send(NodeMsg::ReadIndex { reply }) {
            return Err(ProposeError::Stopped);
        }
        rx.await.unwrap_or(Err(ProposeError::Stopped))
    }

    /// Proposes adding or removing a voter and waits until it is applied here.
    pub async fn change_membership(
        &self,
        change_type: ConfChangeType,
        member: MemberInfo,
    ) -> Result<(), ProposeError> {
        let (reply, rx) = oneshot::channel();
        if !self.send(NodeMsg::ConfChange {
            change_type,
            member,
            reply,
        }) {
            return Err(ProposeError::Stopped);
        }
        rx.await.unwrap_or(Err(ProposeError::Stopped))
    }

    /// Asks the leader (wherever it is) to hand leadership to `to`.
    pub fn transfer_leader(&self, to: u64) -> bool {
        self.send(NodeMsg::TransferLeader(to))
    }

    pub fn status(&self) -> NodeStatus {
        self.shared.status()
    }
}

/// How a node starts.
pub struct NodeOptions {
    pub id: u64,
    /// Initial voters and their Raft addresses, for a brand-new cluster.
    pub bootstrap: Option<BTreeMap<u64, String>>,
    pub timers: RaftTimers,
    /// Take a snapshot and compact the log every this many applied entries.
    pub snapshot_interval: u64,
    /// The data directory's free space and its reserve.
    pub disk: super::disk::DiskGuard,
}

struct Node {
    raw: RawNode<RocksStorage>,
    shared: Arc<Shared>,
    transport: Transport,
    /// Pending proposals by request id, with the leader they were handed to.
    proposals: HashMap<String, (u64, oneshot::Sender<Result<Applied, ProposeError>>)>,
    leader: u64,
    conf_changes: HashMap<u64, oneshot::Sender<Result<(), ProposeError>>>,
    reads: HashMap<Vec<u8>, oneshot::Sender<Result<u64, ProposeError>>>,
    ready_reads: Vec<(u64, oneshot::Sender<Result<u64, ProposeError>>)>,
    next_read: u64,
    applied: u64,
    snapshot_interval: u64,
    /// A snapshot is being encoded and written on another thread.
    snapshot_in_flight: bool,
    /// For jobs that report back to this loop.
    inbox: Sender<NodeMsg>,
    removed: bool,
    /// The term in which this node last proposed the cluster's id.
    named_cluster_in_term: u64,
    disk: super::disk::DiskGuard,
    /// Leadership hand-overs asked for while short of disk.
    handovers: usize,
}

/// Opens the storage, rebuilds the state machine from the latest snapshot plus
/// the applied part of the log, and starts the Raft thread.
pub fn start(
    mut storage: RocksStorage,
    options: NodeOptions,
    transport: Transport,
    logger: slog::Logger,
) -> Result<(NodeHandle, std::thread::JoinHandle<()>), StorageFailure> {
    if storage.is_empty()
        && let Some(voters) = &options.bootstrap
    {
        storage.apply_snapshot(initial_snapshot(voters.keys().copied().collect()))?;
    }
    let mut addresses = storage.load_addresses()?;
    if let Some(voters) = &options.bootstrap {
        for (id, address) in voters {
            addresses.entry(*id).or_insert_with(|| address.clone());
        }
    }
    let (state, applied) = recover(&storage)?;
    for (id, address) in state.members() {
        addresses.insert(*id, address.clone());
    }
    storage.save_addresses(&addresses)?;
    for (id, address) in &addresses {
        transport.set_address(*id, address.clone());
    }
    tracing::info!(
        node = options.id,
        applied,
        config_version = state.config_version(),
        voters = ?storage.conf_state().voters,
        "recovered state from disk"
    );

    let config = Config {
        id: options.id,
        election_tick: options.timers.election_ticks,
        heartbeat_tick: options.timers.heartbeat_ticks,
        applied,
        pre_vote: true,
        check_quorum: true,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        ..Default::default()
    };
    config.validate().map_err(|e| StorageFailure::Corrupt {
        what: "raft config",
        detail: e.to_string(),
    })?;
    let raw = RawNode::new(&config, storage, &logger).map_err(|e| StorageFailure::Corrupt {
        what: "raft state",
        detail: e.to_string(),
    })?;

    let shared = Arc::new(Shared {
        id: options.id,
        replica: Arc::new(Replica::new(state)),
        status: Mutex::new(NodeStatus::default()),
        disk_low: std::sync::atomic::AtomicBool::new(false),
    });
    let (tx, rx) = std::sync::mpsc::channel();
    transport.attach(tx.clone());
    let node = Node {
        raw,
        shared: shared.clone(),
        transport,
        proposals: HashMap::new(),
        leader: 0,
        conf_changes: HashMap::new(),
        reads: HashMap::new(),
        ready_reads: Vec::new(),
        next_read: 0,
        applied,
        snapshot_interval: options.snapshot_interval.max(1),
        snapshot_in_flight: false,
        inbox: tx.clone(),
        removed: false,
        named_cluster_in_term: 0,
        disk: options.disk,
        handovers: 0,
    };
    node.publish_status();
    let tick = options.timers.tick;
    let thread = std::thread::Builder::new()
        .name(format!("raft-{}", options.id))
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| node.run(rx, tick)));
            if outcome.is_err() {
                // A node without its Raft loop must not keep answering as if alive.
                tracing::error!("the raft thread panicked; exiting");
                exit_fatal();
            }
        })
        .map_err(|e| StorageFailure::Corrupt {
            what: "raft thread",
            detail: e.to_string(),
        })?;
    Ok((NodeHandle { tx, shared }, thread))
}

/// The snapshot every founding member starts from: index 1, term 1, the
/// initial voters, an empty state. A node that joins later receives it (or a
/// newer one) from the leader, so it learns the membership the log started with.
fn initial_snapshot(voters: Vec<u64>) -> Snapshot {
    let mut snapshot = Snapshot::default();
    let meta = snapshot.mut_metadata();
    meta.index = 1;
    meta.term = 1;
    meta.mut_conf_state().voters = voters;
    snapshot.set_data(State::default().to_image().encode_to_vec().into());
    snapshot
}

fn decode_image(snapshot: &Snapshot) -> Result<State, StorageFailure> {
    if snapshot.get_metadata().index == 0 {
        return Ok(State::default());
    }
    StateImage::decode(snapshot.get_data())
        .map(State::from_image)
        .map_err(|e| StorageFailure::Corrupt {
            what: "state image",
            detail: e.to_string(),
        })
}

/// State = latest snapshot + the log entries up to the persisted applied index.
fn recover(storage: &RocksStorage) -> Result<(State, u64), StorageFailure> {
    let snapshot = storage.latest_snapshot();
    let mut state = decode_image(snapshot)?;
    let first = snapshot.get_metadata().index;
    let last = storage
        .applied_index()?
        .min(storage.hard_state().commit)
        .min(raft::Storage::last_index(storage).unwrap_or(first));
    if last > first {
        let entries = raft::Storage::entries(
            storage,
            first + 1,
            last + 1,
            None,
            raft::GetEntriesContext::empty(false),
        )
        .map_err(|e| StorageFailure::Corrupt {
            what: "log replay",
            detail: e.to_string(),
        })?;
        for entry in &entries {
            replay(&mut state, entry);
        }
    }
    Ok((state, last.max(first)))
}

/// Applies one committed entry to the state machine (without Raft side effects).
/// Applies one entry; for a command, returns its request id, its result and
/// whether it may change what data planes serve.
fn replay(state: &mut State, entry: &Entry) -> Option<(String, Result<Applied, CommandError>, bool)> {
    if entry.data.is_empty() {
        return None;
    }
    match entry.get_entry_type() {
        EntryType::EntryNormal => match Command::decode(entry.data.as_ref()) {
            Ok(command) => {
                let result = state.apply(entry.index, &command);
                let serves = crate::state::changes_served_config(&command);
                Some((command.request_id, result, serves))
            }
            Err(e) => {
                tracing::error!(index = entry.index, error = %e, "undecodable command in the log; skipped");
                None
            }
        },
        EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
            if let Ok(change) = ConfChange::parse_from_bytes(&entry.data) {
                record_member(state, entry.index, &change);
            }
            None
        }
    }
}

fn record_member(state: &mut State, index: u64, change: &ConfChange) {
    let info = MemberInfo::decode(change.get_context()).ok();
    match change.get_change_type() {
        ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
            if let Some(info) = &info {
                state.set_member(change.node_id, Some(info.raft_address.clone()));
                // Bootstrap members come from the initial snapshot, not here.
                state.audit_membership(index, info, false);
            }
        }
        ConfChangeType::RemoveNode => {
            state.set_member(change.node_id, None);
            if let Some(info) = &info {
                state.audit_membership(index, info, true);
            }
        }
    }
}

impl Node {
    fn run(mut self, rx: Receiver<NodeMsg>, tick: Duration) {
        let mut last_tick = Instant::now();
        loop {
            let timeout = tick.saturating_sub(last_tick.elapsed());
            match rx.recv_timeout(timeout) {
                Ok(msg) => {
                    self.handle(msg);
                    // Drain what queued up so one Ready covers it all.
                    while let Ok(msg) = rx.try_recv() {
                        self.handle(msg);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if last_tick.elapsed() >= tick && !self.removed {
                last_tick = Instant::now();
                self.watch_disk();
                // A follower short of disk does not campaign: it could not
                // append as a leader either.
                if !(self.disk.is_low() && self.raw.raft.state != StateRole::Leader) {
                    self.raw.tick();
                }
                self.forget_abandoned();
            }
            if let Err(e) = self.on_ready() {
                // Raft's safety depends on every write reaching the disk: stop
                // rather than go on with a log we cannot trust.
                tracing::error!(error = %e, "storage failed; stopping the raft node");
                exit_fatal();
            }
            self.name_cluster();
        }
    }

    /// Acts on a change of free disk space (see [`super::disk`]); while
    /// short of disk as a leader, tries to hand leadership over at every
    /// check (the chosen voter may be short of disk too and refuse).
    fn watch_disk(&mut self) {
        let change = self.disk.check();
        self.note_disk(change);
        if self.disk.is_low() && self.disk.just_measured() && self.raw.raft.state == StateRole::Leader {
            self.hand_over_leadership();
        }
    }

    /// Publishes the disk's state to the rest of the process, and logs a change.
    fn note_disk(&mut self, change: Option<super::disk::Change>) {
        self.shared
            .disk_low
            .store(self.disk.is_low(), std::sync::atomic::Ordering::Relaxed);
        match change {
            Some(super::disk::Change::BecameLow) => tracing::error!(
                path = %self.disk.path().display(),
                free_mib = self.disk.free() >> 20,
                reserve_mib = self.disk.reserve() >> 20,
                "disk almost full: refusing writes, not appending, not leading until space frees"
            ),
            Some(super::disk::Change::Recovered) => tracing::info!(
                path = %self.disk.path().display(),
                free_mib = self.disk.free() >> 20,
                "disk space is back: taking writes again"
            ),
            None => {}
        }
    }

    /// Asks another voter to take over: the most up-to-date one first, then
    /// the others in turn (one short of disk refuses, and the next try, a
    /// second later, asks the next).
    fn hand_over_leadership(&mut self) {
        let own = self.shared.id;
        let mut others: Vec<(u64, u64)> = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != own && self.raw.raft.prs().conf().voters().contains(**id))
            .map(|(id, progress)| (*id, progress.matched))
            .collect();
        if others.is_empty() {
            tracing::warn!("no other voter to hand leadership to");
            return;
        }
        others.sort_by_key(|(_, matched)| std::cmp::Reverse(*matched));
        let pick = self.handovers % others.len();
        self.handovers += 1;
        let to = others[pick].0;
        tracing::info!(to, "handing leadership over: this node is short of disk");
        self.raw.transfer_leader(to);
    }

    /// Measures the disk at once; whether it is short.
    fn disk_full_now(&mut self) -> bool {
        let change = self.disk.check_now();
        self.note_disk(change);
        self.disk.is_low()
    }

    fn disk_full(&self) -> ProposeError {
        ProposeError::DiskFull {
            path: self.disk.path().display().to_string(),
            free_mib: self.disk.free() >> 20,
            reserve_mib: self.disk.reserve() >> 20,
            resume_mib: (self.disk.reserve() + self.disk.reserve() / 10).div_ceil(1 << 20),
        }
    }

    /// The first leader of a cluster without an id proposes one (a cluster
    /// made before ids existed gets one the same way). It waits until its
    /// term's first entry is committed and everything committed is applied,
    /// so an id named by an earlier leader is seen, and proposes once per
    /// term; should two proposals ever commit, the state machine keeps the
    /// first.
    fn name_cluster(&mut self) {
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader || self.named_cluster_in_term == raft.term || self.removed {
            return;
        }
        let committed = raft.raft_log.committed;
        if self.applied < committed || raft.raft_log.term(committed).unwrap_or(0) != raft.term {
            return;
        }
        self.named_cluster_in_term = raft.term;
        if !self.shared.replica.state().cluster_id().is_empty() {
            return;
        }
        let cluster_id = format!("{:032x}", rand::random::<u128>());
        let command = Command {
            request_id: format!("{}-cluster-id-{}", self.shared.id, raft.term),
            at: Some(crate::clock::now()),
            actor: Some(pylon_proto::raft::v1::Actor {
                name: "system".to_owned(),
                roles: Vec::new(),
            }),
            method: "SetClusterId".to_owned(),
            op: Some(pylon_proto::raft::v1::command::Op::SetClusterId(
                pylon_proto::raft::v1::SetClusterId {
                    cluster_id: cluster_id.clone(),
                },
            )),
            ..Command::default()
        };
        match self.raw.propose(vec![], command.encode_to_vec()) {
            Ok(()) => tracing::info!(%cluster_id, "naming the cluster"),
            Err(e) => {
                tracing::warn!(error = %e, "could not propose the cluster id; trying again");
                self.named_cluster_in_term = 0;
            }
        }
    }

    fn handle(&mut self, msg: NodeMsg) {
        match msg {
            NodeMsg::Propose { command, reply } => {
                if self.removed {
                    let _ = reply.send(Err(ProposeError::Removed));
                    return;
                }
                if self.disk.is_low() {
                    let _ = reply.send(Err(self.disk_full()));
                    return;
                }
                let request_id = command.request_id.clone();
                match self.raw.propose(vec![], command.encode_to_vec()) {
                    Ok(()) => {
                        self.proposals
                            .insert(request_id, (self.raw.raft.leader_id, reply));
                    }
                    Err(_) => {
                        let _ = reply.send(Err(ProposeError::NoLeader));
                    }
                }
            }
            NodeMsg::ConfChange {
                change_type,
                member,
                reply,
            } => {
                if self.disk.is_low() {
                    let _ = reply.send(Err(self.disk_full()));
                    return;
                }
                let mut change = ConfChange::default();
                change.set_change_type(change_type);
                change.node_id = member.node_id;
                change.set_context(member.encode_to_vec().into());
                let node_id = member.node_id;
                match self.raw.propose_conf_change(vec![], change) {
                    Ok(()) => {
                        self.conf_changes.insert(node_id, reply);
                    }
                    Err(raft::Error::ProposalDropped) => {
                        let _ = reply.send(Err(ProposeError::NoLeader));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ProposeError::Invalid(e.to_string())));
                    }
                }
            }
            NodeMsg::ReadIndex { reply } => {
                self.next_read += 1;
                let ctx = self.next_read.to_be_bytes().to_vec();
                self.raw.read_index(ctx.clone());
                self.reads.insert(ctx, reply);
            }
            // A removed node takes no further part: were it the leader, its
            // heartbeats would keep the others from electing a new one.
            NodeMsg::Raft(_) if self.removed => {}
            // Before taking over leadership, look at the disk now: a second-old
            // figure could hand leadership to a node that just filled up.
            NodeMsg::Raft(msg)
                if msg.get_msg_type() == raft::eraftpb::MessageType::MsgTimeoutNow
                    && self.disk_full_now() => {}
            // Short of disk: entries from the leader are dropped as if lost
            // on the way (the leader sends them again later), and so are
            // proposals forwarded by followers and a leader's order to take
            // over (a leadership transfer): this node must not lead.
            NodeMsg::Raft(msg)
                if self.disk.is_low()
                    && matches!(
                        msg.get_msg_type(),
                        raft::eraftpb::MessageType::MsgAppend
                            | raft::eraftpb::MessageType::MsgSnapshot
                            | raft::eraftpb::MessageType::MsgPropose
                            | raft::eraftpb::MessageType::MsgTimeoutNow
                    ) => {}
            NodeMsg::Raft(msg) => {
                if let Err(e) = self.raw.step(*msg) {
                    tracing::debug!(error = %e, "dropped a raft message");
                }
            }
            NodeMsg::TransferLeader(to) => self.raw.transfer_leader(to),
            NodeMsg::Unreachable(id) => self.raw.report_unreachable(id),
            NodeMsg::SnapshotWritten(written) => {
                self.snapshot_in_flight = false;
                match written {
                    Ok(snapshot) => {
                        let index = snapshot.get_metadata().index;
                        match self.raw.mut_store().commit_snapshot(*snapshot) {
                            Ok(true) => tracing::info!(index, "took a snapshot and compacted the log"),
                            Ok(false) => tracing::debug!(index, "a newer snapshot arrived meanwhile"),
                            Err(e) => tracing::error!(error = %e, "could not compact the log"),
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "could not write a snapshot"),
                }
            }
            NodeMsg::SnapshotSent { to, ok } => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
        }
    }

    /// Callers that gave up (timed out) no longer need an answer.
    fn forget_abandoned(&mut self) {
        self.proposals.retain(|_, (_, reply)| !reply.is_closed());
        self.conf_changes.retain(|_, reply| !reply.is_closed());
        self.reads.retain(|_, reply| !reply.is_closed());
        self.ready_reads.retain(|(_, reply)| !reply.is_closed());
    }

    fn on_ready(&mut self) -> Result<(), StorageFailure> {
        if !self.raw.has_ready() {
            return self.maybe_compact();
        }
        let mut ready = self.raw.ready();

        // 1. Send out the messages that need no persistence first (leader).
        self.transport.send(ready.take_messages());

        // A new leader: proposals handed to the old one may be lost. Tell their
        // callers now rather than let them wait for a timeout.
        if let Some(soft) = ready.ss()
            && soft.leader_id != self.leader
        {
            self.leader = soft.leader_id;
            let new_leader = soft.leader_id;
            let stale: Vec<String> = self
                .proposals
                .iter()
                .filter(|(_, (leader, _))| *leader != new_leader)
                .map(|(id, _)| id.clone())
                .collect();
            for id in stale {
                if let Some((_, reply)) = self.proposals.remove(&id) {
                    let _ = reply.send(Err(ProposeError::LeaderChanged));
                }
            }
        }

        // 2. Apply a snapshot received from the leader.
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.install_snapshot(snapshot)?;
        }

        // 3. Read-index answers: wait until the state machine reaches them.
        for read in ready.take_read_states() {
            if let Some(reply) = self.reads.remove(&read.request_ctx) {
                self.ready_reads.push((read.index, reply));
            }
        }

        // 4. Apply committed entries.
        let committed = ready.take_committed_entries();
        self.apply_entries(committed)?;

        // 5 + 6. Persist new entries and the hard state, fsynced, in one write.
        self.raw.mut_store().persist(ready.entries(), ready.hs())?;

        // 7. Send the messages that had to wait for persistence (followers' votes, acks).
        self.transport.send(ready.take_persisted_messages());

        // 8. Advance, then handle the light ready.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        self.transport.send(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply_entries(committed)?;
        self.raw.advance_apply();

        // 9. Record progress, answer reads, compact when due.
        self.raw.store().set_applied_index(self.applied)?;
        self.answer_reads();
        self.maybe_compact()?;
        self.publish_status();
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageFailure> {
        let state = decode_image(&snapshot)?;
        let index = snapshot.get_metadata().index;
        tracing::info!(index, "installing a snapshot from the leader");
        for (id, address) in state.members() {
            self.transport.set_address(*id, address.clone());
        }
        self.raw.mut_store().apply_snapshot(snapshot)?;
        self.raw.store().save_addresses(&self.transport.addresses())?;
        *self.shared.replica.state_mut() = state;
        self.shared.replica.publish_served_version();
        self.applied = index;
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), StorageFailure> {
        if entries.is_empty() {
            return Ok(());
        }
        let already_applied = self.applied;
        let mut answers = Vec::new();
        let mut served_changed = false;
        {
            let replica = self.shared.replica.clone();
            let mut state = replica.state_mut();
            for entry in &entries {
                if entry.index <= self.applied {
                    continue;
                }
                if let Some((request_id, result, serves)) = replay(&mut state, entry) {
                    served_changed |= serves && result.is_ok();
                    answers.push((request_id, result));
                }
                self.applied = entry.index;
            }
        }
        if served_changed {
            self.shared.replica.publish_served_version();
        }
        // Membership changes take effect in Raft after the state lock is released
        // (publishing the status reads the state).
        for entry in entries.iter().filter(|e| e.index > already_applied) {
            if matches!(entry.get_entry_type(), EntryType::EntryConfChange) && !entry.data.is_empty() {
                self.apply_conf_change(entry)?;
            }
        }
        for (request_id, result) in answers {
            if let Some((_, reply)) = self.proposals.remove(&request_id) {
                let _ = reply.send(result.map_err(ProposeError::from));
            }
        }
        Ok(())
    }

    fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), StorageFailure> {
        let change = ConfChange::parse_from_bytes(&entry.data).map_err(|e| StorageFailure::Corrupt {
            what: "conf change",
            detail: e.to_string(),
        })?;
        let conf_state = match self.raw.apply_conf_change(&change) {
            Ok(conf_state) => conf_state,
            Err(e) => {
                tracing::warn!(error = %e, node = change.node_id, "membership change refused");
                if let Some(reply) = self.conf_changes.remove(&change.node_id) {
                    let _ = reply.send(Err(ProposeError::Invalid(e.to_string())));
                }
                return Ok(());
            }
        };
        self.raw.mut_store().set_conf_state(conf_state)?;
        match change.get_change_type() {
            ConfChangeType::RemoveNode => {
                tracing::info!(node = change.node_id, "member removed");
                self.transport.remove(change.node_id);
                if change.node_id == self.shared.id {
                    tracing::warn!("this node was removed from the cluster; it no longer takes part");
                    self.removed = true;
                }
            }
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                if let Ok(info) = MemberInfo::decode(change.get_context()) {
                    tracing::info!(node = change.node_id, address = %info.raft_address, "member added");
                    self.transport.set_address(change.node_id, info.raft_address);
                }
            }
        }
        self.raw.store().save_addresses(&self.transport.addresses())?;
        // Whoever waits on this change reads the membership next.
        self.publish_status();
        if let Some(reply) = self.conf_changes.remove(&change.node_id) {
            let _ = reply.send(Ok(()));
        }
        Ok(())
    }

    fn answer_reads(&mut self) {
        let applied = self.applied;
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ready_reads)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.ready_reads = waiting;
        for (index, reply) in done {
            let _ = reply.send(Ok(index));
        }
    }

    /// Starts a snapshot when one is due. A cheap copy of the state is taken
    /// here; encoding and writing it with fsync run on another thread, and the
    /// log is compacted when that thread reports back.
    fn maybe_compact(&mut self) -> Result<(), StorageFailure> {
        if self.snapshot_in_flight || self.disk.is_low() {
            return Ok(());
        }
        let snapshot_index = self.raw.store().latest_snapshot().get_metadata().index;
        let wanted = self.raw.store().take_snapshot_request() && self.applied > snapshot_index;
        if !wanted && self.applied < snapshot_index + self.snapshot_interval {
            return Ok(());
        }
        // Resources are shared: this copies pointers, not definitions.
        let state = self.shared.replica.state().clone();
        let mut snapshot = self.raw.store().snapshot_at(self.applied)?;
        let writer = self.raw.store().snapshot_writer();
        let inbox = self.inbox.clone();
        self.snapshot_in_flight = true;
        let spawned = std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                snapshot.set_data(state.to_image().encode_to_vec().into());
                let written = writer
                    .write(&snapshot)
                    .map(|()| Box::new(snapshot))
                    .map_err(|e| e.to_string());
                let _ = inbox.send(NodeMsg::SnapshotWritten(written));
            });
        if let Err(e) = spawned {
            self.snapshot_in_flight = false;
            tracing::error!(error = %e, "could not start a snapshot job");
        }
        Ok(())
    }

    fn publish_status(&self) {
        let raft = &self.raw.raft;
        let store = self.raw.store();
        let conf = store.conf_state();
        let config_version = self.shared.replica.state().config_version();
        let status = NodeStatus {
            node_id: self.shared.id,
            role: if self.removed {
                "REMOVED".into()
            } else {
                role_name(raft.state).into()
            },
            term: raft.term,
            leader_id: raft.leader_id,
            commit_index: raft.raft_log.committed,
            applied_index: self.applied,
            config_version,
            first_index: store.first_index().unwrap_or(0),
            last_index: store.last_index().unwrap_or(0),
            snapshot_index: store.latest_snapshot().get_metadata().index,
            voters: conf.voters.clone(),
            learners: conf.learners.clone(),
            addresses: self.transport.addresses(),
        };
        self.shared.set_status(status);
    }
}

pub fn role_name(role: StateRole) -> &'static str {
    match role {
        StateRole::Leader => "LEADER",
        StateRole::Follower => "FOLLOWER",
        StateRole::Candidate => "CANDIDATE",
        StateRole::PreCandidate => "PRE_CANDIDATE",
    }
}

/// A slog drain that forwards raft-rs's logs to `tracing`.
pub struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        use slog::KV as _;
        let mut fields = FieldCollector(String::new());
        let _ = record.kv().serialize(record, &mut fields);
        let _ = values.serialize(record, &mut fields);
        let message = format!("{}{}", record.msg(), fields.0);
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!(target: "raft", "{message}"),
            slog::Level::Warning => tracing::warn!(target: "raft", "{message}"),
            slog::Level::Info => tracing::info!(target: "raft", "{message}"),
            slog::Level::Debug => tracing::debug!(target: "raft", "{message}"),
            slog::Level::Trace => tracing::trace!(target: "raft", "{message}"),
        }
        Ok(())
    }
}

struct FieldCollector(String);

impl slog::Serializer for FieldCollector {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        use std::fmt::Write as _;
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}

/// A raft-rs logger that writes through `tracing`.
pub fn logger() -> slog::Logger {
    slog::Logger::root(slog::Fuse(TracingDrain), slog::o!())
}
