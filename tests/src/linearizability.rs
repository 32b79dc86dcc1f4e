//! A linearizability checker for histories of a revisioned key–value store of resources.
//!
//! Concurrent clients record every operation they issue as an [`Operation`]: the key, the client, the
//! instants the call was made and the answer came back (`call`, `ret`, in nanoseconds since one origin
//! shared by all clients, e.g. `Instant::duration_since(origin).as_nanos()`), what was asked and what
//! was answered ([`Command`]). [`check`] decides whether some sequential execution of the store,
//! respecting real time, explains every answer — i.e. whether the history is linearizable.
//!
//! # Algorithm
//!
//! Linearizability is local (compositional), so the history is partitioned by key and each key is
//! checked on its own, in key order. Per key this is the Wing–Gong search with Lowe's memoization, as in
//! Porcupine: call and return entries sorted by time (a call before a return at the same instant, so
//! operations that merely touch are treated as concurrent), a depth-first search that repeatedly
//! "linearizes" a pending call that precedes the first outstanding return, backtracking when a return is
//! reached whose call could not be linearized, and a cache of visited `(set of linearized operations,
//! model state)` configurations so that none is explored twice.
//!
//! Operations whose outcome is [`Indeterminate`](CreateOutcome::Indeterminate) have no return entry
//! (their return time is `+∞`): they may be linearized at any point after their call, or never, and the
//! key is accepted as soon as every determinate operation is linearized. Two refinements keep the many
//! orders this allows in check, without giving up soundness or completeness:
//!
//! * candidates with a known return are tried first; then indeterminate writes after which some pending
//!   determinate operation becomes possible; then the remaining indeterminate writes;
//! * a configuration is also skipped when a visited one *dominates* it: same determinate operations
//!   linearized, same record and `floor` (see below), a subset of its indeterminate operations
//!   linearized and no more `unknown` revisions. Any completion of the dominated configuration is a
//!   completion of the dominating one, since unused indeterminate writes may simply never take effect.
//!   (Only a bounded number of candidates is compared, to keep the check cheap.)
//!
//! # Model
//!
//! The state of one key is `(record, floor, unknown)`:
//!
//! * `record` is `None` (absent) or `Some((value, revision))` where `revision` is either known or
//!   *unknown* (the record was written by an indeterminate write that took effect);
//! * `floor` is the largest revision known to have been assigned on the key so far (`0` initially);
//! * `unknown` counts the value-writes (creates and updates) linearized since the write that assigned
//!   `floor` whose revisions are unknown.
//!
//! Revisions are Raft log indexes: each write gets a revision strictly greater than every earlier
//! write's on the key, with gaps allowed. Unknown revisions `u1 < … < uk` (with `k = unknown`) therefore
//! satisfy `floor < u1` and hence `uk >= floor + k`; a revision observed next must exceed `uk`, i.e. be
//! at least `floor + k + 1`. Both bounds are exact: any values meeting them can be realised, so the
//! model never rejects a history a store could have produced on their account. "Pinning" the unknown
//! revision of the present record to an observed `r` requires `r >= floor + k` and then sets
//! `floor = r`, `unknown = 0`.
//!
//! Transitions (`e` is an expected revision, `0` meaning unconditional; "matches `e`" means `e = 0`, or
//! the record's known revision equals `e`, or its unknown revision can be pinned to `e` — which pins it):
//!
//! | command | outcome | allowed when | new state |
//! | --- | --- | --- | --- |
//! | create `v` | `Ok { r }` | absent and `r >= floor + unknown + 1` | `(v, r)`, `floor = r`, `unknown = 0` |
//! | create `v` | `AlreadyExists` | present | unchanged |
//! | update `v`, `e` | `Ok { r }` | present, matches `e`, then `r >= floor + unknown + 1` | `(v, r)`, `floor = r`, `unknown = 0` |
//! | update / delete with `e` | `Conflict` | `e != 0` and the record is not known to have revision `e` | unchanged |
//! | update / delete | `NotFound` | absent | unchanged |
//! | delete `e` | `Ok` | present and matches `e` | absent; `floor` and `unknown` kept |
//! | read | `Found { v, r }` | present with value `v`, and its revision is `r` (pinning an unknown one) | possibly pinned |
//! | read | `NotFound` | absent | unchanged |
//!
//! An indeterminate create, update or delete either never takes effect, or takes effect once at some
//! point after its call exactly like the corresponding successful write, except that a created or
//! updated record's revision is unknown (`unknown += 1`). "Taking effect as a failure" (e.g. an
//! indeterminate create while the key is present) changes nothing, which is indistinguishable from
//! taking effect at the very end, so the search only linearizes an indeterminate write where its
//! effect is possible; the history is accepted once every determinate operation is linearized.
//! Indeterminate reads carry no information and are dropped.
//!
//! ## Deliberate over-approximations (sound, slightly incomplete)
//!
//! * A `Conflict` is accepted on an **absent** key when `e != 0`, since stores differ on whether a
//!   revision precondition or existence is checked first.
//! * A `Conflict` against a record of unknown revision is always accepted, and the fact "this revision
//!   is not `e`" is not remembered; a later pin to exactly `e` is therefore not detected as a violation.
//! * A successful delete is not counted as consuming a revision: the next write only has to exceed the
//!   revisions written before it, not `floor + 1` for the delete's own log entry.
//!
//! These only make the checker more permissive; it never reports a violation for a history that a
//! store with the semantics above could have produced. Revision `0` is never a valid assigned revision.
//!
//! # Cost
//!
//! Exponential in the worst case (the problem is NP-complete), but with memoization the work is roughly
//! proportional to the number of operations times the number of orderings of the operations concurrent
//! at any instant. Every indeterminate write stays concurrent with everything after its call, so dozens
//! of them on one key can make *refuting* a history expensive (accepting a linearizable one usually stays
//! fast thanks to the ordering above); the time budget passed to [`check`] bounds the damage and turns it
//! into [`CheckError::Timeout`]. Spreading a workload over more keys keeps each search small.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

/// One operation of a recorded history: a command a client sent for a key, and what it observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Identifier of the client that issued the operation (free-form; only used in explanations).
    pub client: u64,
    /// The resource key the operation addressed. Keys are checked independently.
    pub key: String,
    /// When the request was issued, in nanoseconds since an origin shared by the whole history.
    pub call: u64,
    /// When the answer was received, in nanoseconds since the same origin; must be `>= call`. Ignored
    /// for indeterminate outcomes, whose return time is taken to be `+∞`.
    pub ret: u64,
    /// What was asked and what was answered.
    pub command: Command,
}

impl Operation {
    /// Builds an operation of `client` on `key`, called at `call` and returned at `ret` (nanoseconds
    /// since the history's origin).
    #[must_use]
    pub fn new(client: u64, key: impl Into<String>, call: u64, ret: u64, command: Command) -> Self {
        Self {
            client,
            key: key.into(),
            call,
            ret,
            command,
        }
    }

    /// Whether the client never learned if the operation took effect (timeout, unavailable, ...).
    #[must_use]
    pub fn is_indeterminate(&self) -> bool {
        match self.command {
            Command::Create { outcome, .. } => outcome == CreateOutcome::Indeterminate,
            Command::Update { outcome, .. } => outcome == UpdateOutcome::Indeterminate,
            Command::Delete { outcome, .. } => outcome == DeleteOutcome::Indeterminate,
            Command::Read { outcome } => outcome == ReadOutcome::Indeterminate,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_indeterminate() {
            write!(
                f,
                "client {} [{}ns, +inf): {}",
                self.client, self.call, self.command
            )
        } else {
            write!(
                f,
                "client {} [{}ns, {}ns]: {}",
                self.client, self.call, self.ret, self.command
            )
        }
    }
}

/// A command sent to the store together with the outcome the client observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Create the resource with `value`; fails if it exists.
    Create {
        /// The value written.
        value: u64,
        /// What the client observed.
        outcome: CreateOutcome,
    },
    /// Replace the resource's value if it exists and, unless `expected_revision` is `0`, if its current
    /// revision equals `expected_revision` (compare-and-set).
    Update {
        /// The value written.
        value: u64,
        /// The revision the client expects the resource to have; `0` means unconditional.
        expected_revision: u64,
        /// What the client observed.
        outcome: UpdateOutcome,
    },
    /// Delete the resource if it exists and, unless `expected_revision` is `0`, if its current revision
    /// equals `expected_revision`.
    Delete {
        /// The revision the client expects the resource to have; `0` means unconditional.
        expected_revision: u64,
        /// What the client observed.
        outcome: DeleteOutcome,
    },
    /// Read the resource.
    Read {
        /// What the client observed.
        outcome: ReadOutcome,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Create { value, outcome } => write!(f, "create(value={value}) -> {outcome:?}"),
            Self::Update {
                value,
                expected_revision,
                outcome,
            } => {
                write!(
                    f,
                    "update(value={value}, expected_revision={expected_revision}) -> {outcome:?}"
                )
            }
            Self::Delete {
                expected_revision,
                outcome,
            } => {
                write!(f, "delete(expected_revision={expected_revision}) -> {outcome:?}")
            }
            Self::Read { outcome } => write!(f, "read() -> {outcome:?}"),
        }
    }
}

/// Outcome of a [`Command::Create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// Created; the store assigned `revision` (a Raft log index, `> 0`).
    Ok {
        /// Revision assigned by the store.
        revision: u64,
    },
    /// The resource already existed; nothing changed.
    AlreadyExists,
    /// Unknown whether it took effect (timeout, unavailable); its revision, if any, is unknown.
    Indeterminate,
}

/// Outcome of a [`Command::Update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Updated; the store assigned `revision`.
    Ok {
        /// Revision assigned by the store.
        revision: u64,
    },
    /// The current revision differed from the expected one; nothing changed.
    Conflict,
    /// The resource did not exist; nothing changed.
    NotFound,
    /// Unknown whether it took effect; its revision, if any, is unknown.
    Indeterminate,
}

/// Outcome of a [`Command::Delete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Deleted.
    Ok,
    /// The current revision differed from the expected one; nothing changed.
    Conflict,
    /// The resource did not exist; nothing changed.
    NotFound,
    /// Unknown whether it took effect.
    Indeterminate,
}

/// Outcome of a [`Command::Read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The resource exists with this value and revision.
    Found {
        /// The value read.
        value: u64,
        /// The revision read.
        revision: u64,
    },
    /// The resource does not exist.
    NotFound,
    /// The read failed; it is dropped from the history.
    Indeterminate,
}

/// Nanoseconds from `origin` to `instant`, the time unit of [`Operation::call`] and [`Operation::ret`]:
/// `0` if `instant` is earlier than `origin`, saturating at `u64::MAX` (about 584 years).
#[must_use]
pub fn nanos_since(origin: Instant, instant: Instant) -> u64 {
    u64::try_from(instant.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

/// Summary of a successful check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckReport {
    /// Number of distinct keys checked.
    pub keys: usize,
    /// Number of operations checked (failed reads are dropped and not counted).
    pub operations: usize,
    /// Number of distinct `(linearized set, model state)` configurations visited, over all keys.
    pub states_explored: u64,
}

/// Why a history could not be shown linearizable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// The operations on `key` admit no linearization.
    #[error("history of key {key:?} is not linearizable\n{explanation}")]
    Violation {
        /// The key whose history is not linearizable.
        key: String,
        /// Human-readable account: the longest linearizable prefix found, the model state after it, the
        /// operation that could not be linearized before its return, and the operations that could have
        /// taken effect at that point.
        explanation: String,
    },
    /// The time budget ran out while checking `key`; the history is neither accepted nor rejected.
    #[error(
        "linearizability check of key {key:?} exceeded its time budget after exploring {explored} states"
    )]
    Timeout {
        /// The key being checked when the budget ran out.
        key: String,
        /// States explored on that key before giving up.
        explored: u64,
    },
    /// An operation is malformed (a determinate operation returned before it was called).
    #[error("operation #{index} on key {key:?} is malformed: {reason}")]
    InvalidHistory {
        /// Key of the malformed operation.
        key: String,
        /// Index of the malformed operation in the history slice.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// Checks that `history` is linearizable with respect to the revisioned key–value model described in
/// the module documentation, spending at most about `budget` of wall-clock time over all keys.
///
/// Operations may appear in any order in the slice. Failed reads are dropped. Keys are checked in
/// lexicographic order and the first failing key is reported.
///
/// # Errors
///
/// * [`CheckError::Violation`] if the operations of some key admit no linearization;
/// * [`CheckError::Timeout`] if the budget ran out before a verdict was reached (the caller should
///   treat this as a failure: nothing was proven);
/// * [`CheckError::InvalidHistory`] if a determinate operation has `ret < call`.
pub fn check(history: &[Operation], budget: Duration) -> Result<CheckReport, CheckError> {
    let deadline = Instant::now().checked_add(budget);
    let mut by_key: BTreeMap<&str, Vec<(usize, &Operation)>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        if !op.is_indeterminate() && op.ret < op.call {
            return Err(CheckError::InvalidHistory {
                key: op.key.clone(),
                index,
                reason: format!("returned at {}ns before it was called at {}ns", op.ret, op.call),
            });
        }
        if matches!(
            op.command,
            Command::Read {
                outcome: ReadOutcome::Indeterminate
            }
        ) {
            continue;
        }
        by_key.entry(op.key.as_str()).or_default().push((index, op));
    }
    let mut report = CheckReport {
        keys: by_key.len(),
        operations: 0,
        states_explored: 0,
    };
    for (key, ops) in &by_key {
        report.operations += ops.len();
        let mut search = Search::new(ops);
        match search.run(deadline) {
            Outcome::Linearizable => {}
            Outcome::Violation => {
                return Err(CheckError::Violation {
                    key: (*key).to_owned(),
                    explanation: search.explain(key),
                });
            }
            Outcome::Timeout => {
                return Err(CheckError::Timeout {
                    key: (*key).to_owned(),
                    explored: search.explored,
                });
            }
        }
        report.states_explored += search.explored;
    }
    Ok(report)
}

/// The present record of a key: its value and its revision, `None` while unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Record {
    value: u64,
    revision: Option<u64>,
}

/// Model state of one key; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
struct KeyState {
    record: Option<Record>,
    floor: u64,
    unknown: u64,
}

impl KeyState {
    /// The present record has revision `revision`, pinning it if it was unknown.
    fn pin(self, revision: u64) -> Option<Self> {
        let record = self.record?;
        match record.revision {
            Some(known) => (known == revision).then_some(self),
            None => (revision >= self.floor.saturating_add(self.unknown)).then_some(Self {
                record: Some(Record {
                    value: record.value,
                    revision: Some(revision),
                }),
                floor: revision,
                unknown: 0,
            }),
        }
    }

    /// The record is present and satisfies the precondition `expected` (`0`: unconditional).
    fn matches(self, expected: u64) -> Option<Self> {
        if expected == 0 {
            self.record.map(|_| self)
        } else {
            self.pin(expected)
        }
    }

    /// A conditional write with precondition `expected` may have been refused with a conflict.
    fn may_conflict(self, expected: u64) -> bool {
        expected != 0 && self.record.is_none_or(|record| record.revision != Some(expected))
    }

    fn write_known(self, value: u64, revision: u64) -> Option<Self> {
        (revision > self.floor.saturating_add(self.unknown)).then_some(Self {
            record: Some(Record {
                value,
                revision: Some(revision),
            }),
            floor: revision,
            unknown: 0,
        })
    }

    fn write_unknown(self, value: u64) -> Self {
        Self {
            record: Some(Record {
                value,
                revision: None,
            }),
            floor: self.floor,
            unknown: self.unknown.saturating_add(1),
        }
    }

    fn deleted(self) -> Self {
        Self { record: None, ..self }
    }

    fn absent(self) -> Option<Self> {
        self.record.is_none().then_some(self)
    }

    fn present(self) -> Option<Self> {
        self.record.is_some().then_some(self)
    }

    /// The state after linearizing `command` here, or `None` if that is impossible. For indeterminate
    /// writes this is the state after the write took effect, `None` when it could not change anything.
    fn step(self, command: &Command) -> Option<Self> {
        match *command {
            Command::Create { value, outcome } => match outcome {
                CreateOutcome::Ok { revision } => self.absent()?.write_known(value, revision),
                CreateOutcome::AlreadyExists => self.present(),
                CreateOutcome::Indeterminate => Some(self.absent()?.write_unknown(value)),
            },
            Command::Update {
                value,
                expected_revision,
                outcome,
            } => match outcome {
                UpdateOutcome::Ok { revision } => {
                    self.matches(expected_revision)?.write_known(value, revision)
                }
                UpdateOutcome::Conflict => self.may_conflict(expected_revision).then_some(self),
                UpdateOutcome::NotFound => self.absent(),
                UpdateOutcome::Indeterminate => Some(self.matches(expected_revision)?.write_unknown(value)),
            },
            Command::Delete {
                expected_revision,
                outcome,
            } => match outcome {
                DeleteOutcome::Ok | DeleteOutcome::Indeterminate => {
                    Some(self.matches(expected_revision)?.deleted())
                }
                DeleteOutcome::Conflict => self.may_conflict(expected_revision).then_some(self),
                DeleteOutcome::NotFound => self.absent(),
            },
            Command::Read { outcome } => match outcome {
                ReadOutcome::Found { value, revision } => {
                    if self.record?.value == value {
                        self.pin(revision)
                    } else {
                        None
                    }
                }
                ReadOutcome::NotFound => self.absent(),
                ReadOutcome::Indeterminate => Some(self),
            },
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.record {
            None => write!(f, "absent")?,
            Some(Record {
                value,
                revision: Some(revision),
            }) => {
                write!(f, "present with value {value} at revision {revision}")?;
            }
            Some(Record {
                value,
                revision: None,
            }) => write!(
                f,
                "present with value {value} at an unknown revision >= {}",
                self.floor.saturating_add(self.unknown)
            )?,
        }
        write!(
            f,
            " (largest known revision {}, {} write(s) of unknown revision since)",
            self.floor, self.unknown
        )
    }
}

const NIL: usize = usize::MAX;
/// Head sentinel of the list of determinate entries.
const HEAD: usize = 0;
/// Head sentinel of the list of indeterminate calls.
const INDETERMINATE_HEAD: usize = 1;
/// How many search steps run between two looks at the clock.
const CLOCK_INTERVAL: u64 = 256;

enum Outcome {
    Linearizable,
    Violation,
    Timeout,
}

/// The deepest point the search got stuck at, kept to explain a violation.
struct Stuck {
    prefix: Vec<usize>,
    state: KeyState,
    blocked: Option<usize>,
    window: Vec<usize>,
}

/// Wing–Gong search over the operations of one key. Nodes `0` and `1` are list heads; operation `i`
/// has its call at node `2 + 2i` and, if determinate, its return at node `3 + 2i`. Determinate calls
/// and returns form one doubly linked list in time order; indeterminate calls another, in call order.
struct Search<'a> {
    ops: &'a [(usize, &'a Operation)],
    /// Per operation: whether its outcome is known, and its ordinal among the operations of its kind.
    slots: Vec<(bool, usize)>,
    next: Vec<usize>,
    prev: Vec<usize>,
    time: Vec<u64>,
    /// Determinate operations not linearized yet.
    remaining: usize,
    linearized: Linearized,
    visited: Visited,
    stack: Vec<Frame>,
    state: KeyState,
    explored: u64,
    deepest: Option<Stuck>,
}

fn call_node(op: usize) -> usize {
    2 + 2 * op
}

fn return_node(op: usize) -> usize {
    3 + 2 * op
}

fn op_of(node: usize) -> usize {
    (node - 2) / 2
}

fn is_return(node: usize) -> bool {
    node >= 2 && node % 2 == 1
}

/// The operations linearized so far, as bitsets over the ordinals of each kind.
struct Linearized {
    determinate: Vec<u64>,
    indeterminate: Vec<u64>,
}

impl Linearized {
    fn toggle(&mut self, (determinate, ordinal): (bool, usize)) {
        let bits = if determinate {
            &mut self.determinate
        } else {
            &mut self.indeterminate
        };
        bits[ordinal / 64] ^= 1 << (ordinal % 64);
    }
}

/// Lowe's cache of visited configurations, with a bounded dominance check on top.
///
/// A configuration `(D, I, state)` (determinate and indeterminate operations linearized, model state) is
/// skipped if it was visited before. It is also skipped if it is dominated by a visited `(D, I', state')`
/// with `I' ⊆ I`, the same record and floor, and `state'.unknown <= state.unknown`: the latter still has
/// every indeterminate operation of the former available (indeterminate operations need never be
/// linearized) under weaker revision bounds, so any completion of the former is one of the latter.
/// Skipping dominated configurations keeps the search complete (by induction on the length of a
/// shortest completion) while collapsing the many subsets of indeterminate writes that lead to the same
/// state. Looking for a dominating configuration is optional, so only the [`DOMINANCE_SCAN`] visited
/// configurations with the fewest indeterminate operations are compared, to bound the cost.
#[derive(Default)]
struct Visited {
    /// Every visited configuration, encoded by [`Visited::encode`].
    exact: HashSet<Box<[u64]>>,
    /// Visited configurations by a hash of `(D, record, floor)`, fewest indeterminate operations first.
    buckets: HashMap<u64, Vec<VisitedConfiguration>>,
    scratch: Vec<u64>,
}

/// How many visited configurations are compared with a new one for dominance.
const DOMINANCE_SCAN: usize = 64;

struct VisitedConfiguration {
    determinate: Box<[u64]>,
    record: Option<Record>,
    floor: u64,
    indeterminate: Box<[u64]>,
    lifted: u32,
    unknown: u64,
}

impl Visited {
    fn encode(scratch: &mut Vec<u64>, linearized: &Linearized, state: KeyState) {
        scratch.clear();
        scratch.extend_from_slice(&linearized.determinate);
        scratch.extend_from_slice(&linearized.indeterminate);
        let (present, value, revision) = match state.record {
            None => (0, 0, 0),
            Some(Record {
                value,
                revision: None,
            }) => (1, value, 0),
            Some(Record {
                value,
                revision: Some(revision),
            }) => (2, value, revision),
        };
        scratch.extend_from_slice(&[present, value, revision, state.floor, state.unknown]);
    }

    /// Records the configuration `(linearized, state)` and returns `true`, unless it was visited or a
    /// visited configuration is found to dominate it.
    fn insert(&mut self, linearized: &Linearized, state: KeyState) -> bool {
        Self::encode(&mut self.scratch, linearized, state);
        if self.exact.contains(self.scratch.as_slice()) {
            return false;
        }
        let mut hasher = DefaultHasher::new();
        (&linearized.determinate, state.record, state.floor).hash(&mut hasher);
        let bucket = self.buckets.entry(hasher.finish()).or_default();
        let lifted = linearized
            .indeterminate
            .iter()
            .map(|word| word.count_ones())
            .sum::<u32>();
        let dominated = bucket
            .iter()
            .take_while(|seen| seen.lifted <= lifted)
            .take(DOMINANCE_SCAN)
            .any(|seen| {
                seen.unknown <= state.unknown
                    && seen.record == state.record
                    && seen.floor == state.floor
                    && *seen.determinate == *linearized.determinate
                    && seen
                        .indeterminate
                        .iter()
                        .zip(&linearized.indeterminate)
                        .all(|(seen, now)| seen & !now == 0)
            });
        if dominated {
            return false;
        }
        self.exact.insert(self.scratch.as_slice().into());
        let position = bucket.partition_point(|seen| seen.lifted <= lifted);
        if position < DOMINANCE_SCAN {
            bucket.insert(
                position,
                VisitedConfiguration {
                    determinate: linearized.determinate.as_slice().into(),
                    record: state.record,
                    floor: state.floor,
                    indeterminate: linearized.indeterminate.as_slice().into(),
                    lifted,
                    unknown: state.unknown,
                },
            );
            bucket.truncate(DOMINANCE_SCAN);
        }
        true
    }
}

/// One linearized operation on the search stack.
struct Frame {
    op: usize,
    /// The model state before it.
    before: KeyState,
    /// Whether it was taken in the first, `enabling`, walk of the indeterminate list.
    enabling: bool,
}

/// Where the search looks for the next operation to linearize.
#[derive(Clone, Copy)]
enum Cursor {
    /// At this node of the determinate list.
    Determinate(usize),
    /// At this node of the indeterminate list; only calls made before the first outstanding return
    /// (at node `barrier`) are candidates. The list is walked twice: first taking only operations
    /// after which some pending determinate operation can be linearized (`enabling`), then all.
    Indeterminate {
        node: usize,
        barrier: usize,
        enabling: bool,
    },
}

impl<'a> Search<'a> {
    fn new(ops: &'a [(usize, &'a Operation)]) -> Self {
        let nodes = 2 + 2 * ops.len();
        let mut time = vec![0; nodes];
        let mut determinate = Vec::new();
        let mut indeterminate = Vec::new();
        let mut slots = Vec::with_capacity(ops.len());
        for (i, (_, op)) in ops.iter().enumerate() {
            time[call_node(i)] = op.call;
            if op.is_indeterminate() {
                slots.push((false, indeterminate.len()));
                indeterminate.push(call_node(i));
            } else {
                slots.push((true, determinate.len() / 2));
                time[return_node(i)] = op.ret;
                determinate.push(call_node(i));
                determinate.push(return_node(i));
            }
        }
        // Calls before returns at equal instants: touching operations count as concurrent.
        determinate.sort_by_key(|&node| (time[node], is_return(node), node));
        indeterminate.sort_by_key(|&node| (time[node], node));
        let remaining = determinate.len() / 2;
        let mut search = Self {
            ops,
            slots,
            next: vec![NIL; nodes],
            prev: vec![NIL; nodes],
            time,
            remaining,
            linearized: Linearized {
                determinate: vec![0; remaining.div_ceil(64)],
                indeterminate: vec![0; indeterminate.len().div_ceil(64)],
            },
            visited: Visited::default(),
            stack: Vec::new(),
            state: KeyState::default(),
            explored: 0,
            deepest: None,
        };
        search.link(HEAD, &determinate);
        search.link(INDETERMINATE_HEAD, &indeterminate);
        search
    }

    fn link(&mut self, head: usize, nodes: &[usize]) {
        let mut last = head;
        for &node in nodes {
            self.next[last] = node;
            self.prev[node] = last;
            last = node;
        }
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }

    fn determinate(&self, op: usize) -> bool {
        self.slots[op].0
    }

    fn lift(&mut self, op: usize) {
        self.unlink(call_node(op));
        if self.determinate(op) {
            self.unlink(return_node(op));
        }
    }

    fn unlift(&mut self, op: usize) {
        if self.determinate(op) {
            self.relink(return_node(op));
        }
        self.relink(call_node(op));
    }

    /// The first outstanding return entry (or `NIL`), i.e. the deadline for the pending calls.
    fn barrier(&self) -> usize {
        let mut node = self.next[HEAD];
        while node != NIL && !is_return(node) {
            node = self.next[node];
        }
        node
    }

    /// Operations that could be linearized next when the first outstanding return is `barrier`.
    fn window(&self, barrier: usize) -> Vec<usize> {
        let mut window = Vec::new();
        let mut node = self.next[HEAD];
        while node != NIL && node != barrier {
            window.push(op_of(node));
            node = self.next[node];
        }
        let mut node = self.next[INDETERMINATE_HEAD];
        while node != NIL && (barrier == NIL || self.time[node] <= self.time[barrier]) {
            window.push(op_of(node));
            node = self.next[node];
        }
        window
    }

    fn run(&mut self, deadline: Option<Instant>) -> Outcome {
        let mut cursor = Cursor::Determinate(self.next[HEAD]);
        let mut steps: u64 = 0;
        while self.remaining > 0 {
            if steps.is_multiple_of(CLOCK_INTERVAL)
                && deadline.is_some_and(|deadline| Instant::now() >= deadline)
            {
                return Outcome::Timeout;
            }
            steps += 1;
            cursor = match cursor {
                Cursor::Determinate(node) if node != NIL && !is_return(node) => {
                    self.try_lift(op_of(node), cursor)
                }
                Cursor::Determinate(barrier) => Cursor::Indeterminate {
                    node: self.next[INDETERMINATE_HEAD],
                    barrier,
                    enabling: true,
                },
                Cursor::Indeterminate { node, barrier, .. }
                    if node != NIL && (barrier == NIL || self.time[node] <= self.time[barrier]) =>
                {
                    self.try_lift(op_of(node), cursor)
                }
                Cursor::Indeterminate {
                    barrier,
                    enabling: true,
                    ..
                } => Cursor::Indeterminate {
                    node: self.next[INDETERMINATE_HEAD],
                    barrier,
                    enabling: false,
                },
                Cursor::Indeterminate {
                    barrier,
                    enabling: false,
                    ..
                } => {
                    self.record_stuck(barrier);
                    match self.backtrack() {
                        Some(cursor) => cursor,
                        None => return Outcome::Violation,
                    }
                }
            };
        }
        Outcome::Linearizable
    }

    /// Linearizes `op` next if the model allows it and the resulting configuration is new, returning
    /// where to look for the operation after it; otherwise moves `cursor` on to the next candidate.
    fn try_lift(&mut self, op: usize, cursor: Cursor) -> Cursor {
        if let Some(after) = self.state.step(&self.ops[op].1.command) {
            let enabling = matches!(cursor, Cursor::Indeterminate { enabling: true, .. });
            let worth_trying = match cursor {
                Cursor::Indeterminate {
                    barrier,
                    enabling: true,
                    ..
                } => self.enables(after, barrier),
                _ => true,
            };
            self.linearized.toggle(self.slots[op]);
            if worth_trying && self.visited.insert(&self.linearized, after) {
                self.explored += 1;
                self.stack.push(Frame {
                    op,
                    before: self.state,
                    enabling,
                });
                self.state = after;
                self.lift(op);
                if self.determinate(op) {
                    self.remaining -= 1;
                }
                return Cursor::Determinate(self.next[HEAD]);
            }
            self.linearized.toggle(self.slots[op]);
        }
        match cursor {
            Cursor::Determinate(node) => Cursor::Determinate(self.next[node]),
            Cursor::Indeterminate {
                node,
                barrier,
                enabling,
            } => Cursor::Indeterminate {
                node: self.next[node],
                barrier,
                enabling,
            },
        }
    }

    /// Undoes the last linearization and returns where to look for an alternative to it, or `None` if
    /// there is nothing left to undo.
    fn backtrack(&mut self) -> Option<Cursor> {
        let Frame { op, before, enabling } = self.stack.pop()?;
        self.state = before;
        self.linearized.toggle(self.slots[op]);
        self.unlift(op);
        Some(if self.determinate(op) {
            self.remaining += 1;
            Cursor::Determinate(self.next[call_node(op)])
        } else {
            Cursor::Indeterminate {
                node: self.next[call_node(op)],
                barrier: self.barrier(),
                enabling,
            }
        })
    }

    /// Whether some pending determinate operation (called before `barrier`) can be linearized in `state`.
    fn enables(&self, state: KeyState, barrier: usize) -> bool {
        let mut node = self.next[HEAD];
        while node != NIL && node != barrier {
            if state.step(&self.ops[op_of(node)].1.command).is_some() {
                return true;
            }
            node = self.next[node];
        }
        false
    }

    fn record_stuck(&mut self, barrier: usize) {
        if self
            .deepest
            .as_ref()
            .is_some_and(|deepest| deepest.prefix.len() >= self.stack.len())
        {
            return;
        }
        self.deepest = Some(Stuck {
            prefix: self.stack.iter().map(|frame| frame.op).collect(),
            state: self.state,
            blocked: (barrier != NIL).then(|| op_of(barrier)),
            window: self.window(barrier),
        });
    }

    fn describe(&self, op: usize) -> String {
        let (index, operation) = self.ops[op];
        format!("    #{index} {operation}")
    }

    fn explain(&self, key: &str) -> String {
        const SHOWN: usize = 8;
        const WINDOW_SHOWN: usize = 24;
        let mut lines = vec![format!(
            "No linearization of the {} operation(s) on key {key:?} exists.",
            self.ops.len()
        )];
        if let Some(stuck) = &self.deepest {
            let prefix = &stuck.prefix;
            if prefix.is_empty() {
                lines.push(
                    "Not even a first operation can be linearized from the initial state (absent).".into(),
                );
            } else {
                let shown = if prefix.len() > SHOWN {
                    format!("; its last {SHOWN} are")
                } else {
                    String::new()
                };
                lines.push(format!(
                    "The longest linearizable prefix found has {} operation(s){shown}:",
                    prefix.len()
                ));
                lines.extend(
                    prefix[prefix.len().saturating_sub(SHOWN)..]
                        .iter()
                        .map(|&op| self.describe(op)),
                );
                lines.push(format!("Model state after it: {}.", stuck.state));
            }
            if let Some(blocked) = stuck.blocked {
                lines.push("This operation must take effect before it returns, but cannot:".into());
                lines.push(self.describe(blocked));
            }
            lines.push(
                "Operations that could take effect at that point, none of which leads anywhere:".into(),
            );
            lines.extend(
                stuck
                    .window
                    .iter()
                    .take(WINDOW_SHOWN)
                    .map(|&op| self.describe(op)),
            );
            if stuck.window.len() > WINDOW_SHOWN {
                lines.push(format!("    ... and {} more", stuck.window.len() - WINDOW_SHOWN));
            }
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Duration = Duration::from_secs(10);
    const KEY: &str = "routes/a";

    fn op(client: u64, call: u64, ret: u64, command: Command) -> Operation {
        Operation::new(client, KEY, call, ret, command)
    }

    fn create(value: u64, outcome: CreateOutcome) -> Command {
        Command::Create { value, outcome }
    }

    fn created(value: u64, revision: u64) -> Command {
        create(value, CreateOutcome::Ok { revision })
    }

    fn update(value: u64, expected_revision: u64, outcome: UpdateOutcome) -> Command {
        Command::Update {
            value,
            expected_revision,
            outcome,
        }
    }

    fn updated(value: u64, expected_revision: u64, revision: u64) -> Command {
        update(value, expected_revision, UpdateOutcome::Ok { revision })
    }

    fn delete(expected_revision: u64, outcome: DeleteOutcome) -> Command {
        Command::Delete {
            expected_revision,
            outcome,
        }
    }

    fn read(value: u64, revision: u64) -> Command {
        Command::Read {
            outcome: ReadOutcome::Found { value, revision },
        }
    }

    fn read_nothing() -> Command {
        Command::Read {
            outcome: ReadOutcome::NotFound,
        }
    }

    fn assert_linearizable(history: &[Operation]) -> CheckReport {
        match check(history, BUDGET) {
            Ok(report) => report,
            Err(error) => panic!("expected a linearizable history, got: {error}"),
        }
    }

    fn assert_violation(history: &[Operation]) -> String {
        match check(history, BUDGET) {
            Err(CheckError::Violation { key, explanation }) => {
                assert_eq!(key, KEY);
                explanation
            }
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_history_is_linearizable() {
        assert_eq!(
            assert_linearizable(&[]),
            CheckReport {
                keys: 0,
                operations: 0,
                states_explored: 0
            }
        );
    }

    #[test]
    fn a_sequential_history_of_every_kind_of_operation_is_linearizable() {
        let report = assert_linearizable(&[
            op(1, 0, 10, read_nothing()),
            op(1, 20, 30, created(1, 5)),
            op(2, 40, 50, create(9, CreateOutcome::AlreadyExists)),
            op(2, 60, 70, read(1, 5)),
            op(1, 80, 90, updated(2, 5, 7)),
            op(2, 100, 110, update(3, 5, UpdateOutcome::Conflict)),
            op(2, 120, 130, updated(3, 0, 12)),
            op(1, 140, 150, delete(7, DeleteOutcome::Conflict)),
            op(1, 160, 170, delete(12, DeleteOutcome::Ok)),
            op(2, 180, 190, update(4, 0, UpdateOutcome::NotFound)),
            op(2, 200, 210, delete(0, DeleteOutcome::NotFound)),
            op(1, 220, 230, read_nothing()),
            op(1, 240, 250, created(5, 13)),
            op(2, 260, 270, read(5, 13)),
        ]);
        assert_eq!(report.keys, 1);
        assert_eq!(report.operations, 14);
    }

    #[test]
    fn overlapping_writes_may_take_effect_in_call_order() {
        assert_linearizable(&[
            op(0, 0, 5, created(0, 1)),
            op(1, 10, 100, updated(1, 0, 2)),
            op(2, 20, 110, updated(2, 0, 3)),
            op(3, 120, 130, read(2, 3)),
        ]);
    }

    #[test]
    fn overlapping_writes_may_take_effect_in_the_opposite_order() {
        assert_linearizable(&[
            op(0, 0, 5, created(0, 1)),
            op(1, 10, 100, updated(1, 0, 3)),
            op(2, 20, 110, updated(2, 0, 2)),
            op(3, 120, 130, read(1, 3)),
        ]);
    }

    #[test]
    fn a_read_that_overlaps_a_write_may_see_either_value() {
        for seen in [read(0, 1), read(1, 2)] {
            assert_linearizable(&[
                op(0, 0, 5, created(0, 1)),
                op(1, 10, 100, updated(1, 0, 2)),
                op(2, 50, 60, seen),
            ]);
        }
    }

    #[test]
    fn operations_that_only_touch_in_time_are_treated_as_concurrent() {
        assert_linearizable(&[op(1, 0, 10, read(1, 4)), op(2, 10, 20, created(1, 4))]);
    }

    #[test]
    fn a_read_that_sees_an_older_value_after_a_newer_write_returned_is_a_violation() {
        assert_violation(&[
            op(1, 0, 10, created(1, 1)),
            op(1, 20, 30, updated(2, 1, 2)),
            op(2, 40, 50, read(1, 1)),
        ]);
    }

    #[test]
    fn an_acknowledged_write_cannot_be_lost_to_a_read_that_starts_after_it_returned() {
        // Concurrent writers; the second acknowledged write is missing from a later read, which still
        // sees the first one although both returned before the read began.
        assert_violation(&[
            op(0, 0, 5, created(0, 1)),
            op(1, 10, 40, updated(1, 0, 2)),
            op(2, 20, 30, updated(2, 0, 3)),
            op(3, 50, 60, read(1, 2)),
        ]);
    }

    #[test]
    fn a_read_of_a_deleted_resource_after_the_delete_returned_is_a_violation() {
        assert_violation(&[
            op(1, 0, 10, created(1, 1)),
            op(1, 20, 30, delete(0, DeleteOutcome::Ok)),
            op(2, 40, 50, read(1, 1)),
        ]);
    }

    #[test]
    fn an_indeterminate_create_that_later_shows_up_in_a_read_is_linearizable() {
        assert_linearizable(&[
            op(1, 0, 0, create(7, CreateOutcome::Indeterminate)),
            op(2, 1_000, 1_010, read_nothing()),
            op(2, 2_000, 2_010, read(7, 42)),
            op(2, 3_000, 3_010, create(8, CreateOutcome::AlreadyExists)),
        ]);
    }

    #[test]
    fn an_indeterminate_create_that_is_never_seen_is_linearizable() {
        assert_linearizable(&[
            op(1, 0, 0, create(7, CreateOutcome::Indeterminate)),
            op(2, 1_000, 1_010, read_nothing()),
            op(2, 2_000, 2_010, created(8, 3)),
            op(2, 3_000, 3_010, read(8, 3)),
        ]);
    }

    #[test]
    fn an_indeterminate_write_cannot_take_effect_before_it_was_called() {
        assert_violation(&[
            op(2, 0, 10, read(7, 42)),
            op(1, 20, 0, create(7, CreateOutcome::Indeterminate)),
        ]);
    }

    #[test]
    fn an_indeterminate_write_that_took_effect_stays_visible() {
        assert_violation(&[
            op(1, 0, 0, create(7, CreateOutcome::Indeterminate)),
            op(2, 10, 20, read(7, 42)),
            op(2, 30, 40, read_nothing()),
        ]);
    }

    #[test]
    fn two_successful_creates_without_a_delete_between_are_a_violation() {
        assert_violation(&[op(1, 0, 10, created(1, 1)), op(2, 20, 30, created(2, 2))]);
    }

    #[test]
    fn two_concurrent_successful_creates_are_a_violation() {
        assert_violation(&[op(1, 0, 100, created(1, 1)), op(2, 10, 90, created(2, 2))]);
    }

    #[test]
    fn a_compare_and_set_with_a_stale_expected_revision_cannot_succeed() {
        assert_violation(&[
            op(1, 0, 10, created(1, 1)),
            op(1, 20, 30, updated(2, 1, 2)),
            op(2, 40, 50, updated(3, 1, 3)),
        ]);
    }

    #[test]
    fn a_compare_and_set_with_the_current_revision_cannot_conflict() {
        assert_violation(&[
            op(1, 0, 10, created(1, 4)),
            op(2, 20, 30, update(2, 4, UpdateOutcome::Conflict)),
        ]);
    }

    #[test]
    fn a_revision_that_goes_backwards_is_a_violation() {
        assert_violation(&[op(1, 0, 10, created(1, 5)), op(1, 20, 30, updated(2, 0, 3))]);
    }

    #[test]
    fn a_read_that_sees_a_revision_other_than_the_current_one_is_a_violation() {
        assert_violation(&[op(1, 0, 10, created(1, 5)), op(2, 20, 30, read(1, 6))]);
    }

    #[test]
    fn a_recreated_resource_must_get_a_newer_revision_than_the_deleted_one() {
        assert_violation(&[
            op(1, 0, 10, created(1, 5)),
            op(1, 20, 30, delete(5, DeleteOutcome::Ok)),
            op(1, 40, 50, created(2, 5)),
        ]);
    }

    #[test]
    fn a_read_pins_the_unknown_revision_of_an_indeterminate_write() {
        let base = [
            op(1, 0, 10, created(1, 5)),
            op(1, 20, 0, update(2, 5, UpdateOutcome::Indeterminate)),
            op(2, 100, 110, read(2, 9)),
        ];
        assert_linearizable(&base);
        let mut contradicting = base.to_vec();
        contradicting.push(op(3, 120, 130, read(2, 10)));
        assert_violation(&contradicting);
        let mut consistent = base.to_vec();
        consistent.push(op(3, 120, 130, updated(3, 9, 11)));
        assert_linearizable(&consistent);
    }

    #[test]
    fn an_unknown_revision_is_newer_than_every_revision_before_it() {
        assert_violation(&[
            op(1, 0, 10, created(1, 5)),
            op(1, 20, 0, update(2, 0, UpdateOutcome::Indeterminate)),
            op(2, 100, 110, read(2, 5)),
        ]);
    }

    #[test]
    fn each_indeterminate_write_that_took_effect_uses_up_at_least_one_revision() {
        let history = |observed| {
            vec![
                op(1, 0, 10, created(1, 5)),
                op(1, 20, 30, delete(0, DeleteOutcome::Ok)),
                op(1, 40, 50, create(2, CreateOutcome::Indeterminate)),
                // Proves the indeterminate create took effect, without revealing its revision.
                op(2, 60, 70, create(9, CreateOutcome::AlreadyExists)),
                op(1, 80, 90, update(3, 0, UpdateOutcome::Indeterminate)),
                op(2, 100, 110, read(3, observed)),
            ]
        };
        // Value 2 got a revision of at least 6, so value 3 needs at least 7.
        assert_violation(&history(6));
        assert_linearizable(&history(7));
    }

    #[test]
    fn a_successful_compare_and_set_pins_an_unknown_revision() {
        let history = |second_expected| {
            vec![
                op(1, 0, 10, created(1, 5)),
                op(1, 20, 30, update(2, 0, UpdateOutcome::Indeterminate)),
                op(2, 100, 110, updated(3, 8, 12)),
                op(3, 200, 210, updated(4, second_expected, 15)),
            ]
        };
        // The first CAS proves the indeterminate write took effect at revision 8.
        assert_linearizable(&history(12));
        assert_violation(&history(8));
    }

    #[test]
    fn an_indeterminate_compare_and_set_takes_effect_only_if_its_revision_matched() {
        assert_violation(&[
            op(1, 0, 10, created(1, 5)),
            op(1, 20, 30, update(2, 4, UpdateOutcome::Indeterminate)),
            op(2, 100, 110, read(2, 9)),
        ]);
    }

    #[test]
    fn an_indeterminate_delete_may_explain_a_later_absence() {
        assert_linearizable(&[
            op(1, 0, 10, created(1, 5)),
            op(1, 20, 30, delete(5, DeleteOutcome::Indeterminate)),
            op(2, 100, 110, read_nothing()),
            op(2, 120, 130, created(2, 6)),
        ]);
    }

    #[test]
    fn instants_convert_to_nanoseconds_since_the_origin() {
        let origin = Instant::now();
        let later = origin + Duration::from_micros(3);
        assert_eq!(nanos_since(origin, later), 3_000);
        assert_eq!(nanos_since(later, origin), 0);
    }

    #[test]
    fn failed_reads_are_dropped_from_the_history() {
        let report = assert_linearizable(&[
            op(1, 0, 10, created(1, 5)),
            op(
                2,
                20,
                30,
                Command::Read {
                    outcome: ReadOutcome::Indeterminate,
                },
            ),
        ]);
        assert_eq!(report.operations, 1);
    }

    #[test]
    fn keys_are_checked_independently() {
        let history = [
            Operation::new(1, "a", 0, 10, created(1, 1)),
            Operation::new(1, "b", 0, 10, created(1, 1)),
            Operation::new(2, "a", 20, 30, read(1, 1)),
            Operation::new(2, "b", 20, 30, read_nothing()),
        ];
        match check(&history, BUDGET) {
            Err(CheckError::Violation { key, .. }) => assert_eq!(key, "b"),
            other => panic!("expected a violation on b, got {other:?}"),
        }
        let report = check(&history[..3], BUDGET).expect("a and b are each linearizable");
        assert_eq!((report.keys, report.operations), (2, 3));
    }

    #[test]
    fn an_operation_returning_before_its_call_is_rejected_as_malformed() {
        let result = check(&[op(1, 10, 5, read_nothing())], BUDGET);
        assert!(
            matches!(result, Err(CheckError::InvalidHistory { index: 0, .. })),
            "{result:?}"
        );
    }

    #[test]
    fn the_explanation_names_the_operation_that_cannot_be_linearized() {
        let explanation = assert_violation(&[
            op(1, 0, 10, created(1, 1)),
            op(1, 20, 30, updated(2, 1, 2)),
            op(2, 40, 50, read(1, 1)),
        ]);
        assert!(
            explanation.contains("longest linearizable prefix found has 2"),
            "{explanation}"
        );
        assert!(explanation.contains("value 2 at revision 2"), "{explanation}");
        assert!(
            explanation
                .contains("cannot:\n    #2 client 2 [40ns, 50ns]: read() -> Found { value: 1, revision: 1 }"),
            "{explanation}"
        );
    }

    /// A tiny deterministic xorshift64* generator, so the tests need no extra dependency.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }

        fn percent(&mut self, chance: u64) -> bool {
            self.below(100) < chance
        }
    }

    struct Shape {
        clients: u64,
        ops_per_client: u64,
        keys: u64,
        indeterminate_percent: u64,
        /// Upper bound of the time from a call to its effect, and from the effect to the return.
        latency: u64,
    }

    /// The same command with an indeterminate outcome.
    fn made_indeterminate(command: Command) -> Command {
        match command {
            Command::Create { value, .. } => create(value, CreateOutcome::Indeterminate),
            Command::Update {
                value,
                expected_revision,
                ..
            } => update(value, expected_revision, UpdateOutcome::Indeterminate),
            Command::Delete {
                expected_revision, ..
            } => delete(expected_revision, DeleteOutcome::Indeterminate),
            Command::Read { .. } => Command::Read {
                outcome: ReadOutcome::Indeterminate,
            },
        }
    }

    /// A real sequential store whose revisions are indexes of a log shared by all keys.
    #[derive(Default)]
    struct SequentialStore {
        records: HashMap<String, (u64, u64)>,
        log_index: u64,
    }

    impl SequentialStore {
        /// Executes `command` (whose outcome is ignored) and returns it with the store's outcome.
        fn execute(&mut self, rng: &mut Rng, key: &str, command: Command) -> Command {
            let record = self.records.get(key).copied();
            let matches =
                |expected| expected == 0 || record.is_some_and(|(_, revision)| revision == expected);
            match command {
                Command::Create { value, .. } => create(
                    value,
                    if record.is_some() {
                        CreateOutcome::AlreadyExists
                    } else {
                        CreateOutcome::Ok {
                            revision: self.write(rng, key, Some(value)),
                        }
                    },
                ),
                Command::Update {
                    value,
                    expected_revision,
                    ..
                } => update(
                    value,
                    expected_revision,
                    match record {
                        None => UpdateOutcome::NotFound,
                        Some(_) if !matches(expected_revision) => UpdateOutcome::Conflict,
                        Some(_) => UpdateOutcome::Ok {
                            revision: self.write(rng, key, Some(value)),
                        },
                    },
                ),
                Command::Delete {
                    expected_revision, ..
                } => delete(
                    expected_revision,
                    match record {
                        None => DeleteOutcome::NotFound,
                        Some(_) if !matches(expected_revision) => DeleteOutcome::Conflict,
                        Some(_) => {
                            self.write(rng, key, None);
                            DeleteOutcome::Ok
                        }
                    },
                ),
                Command::Read { .. } => Command::Read {
                    outcome: match record {
                        None => ReadOutcome::NotFound,
                        Some((value, revision)) => ReadOutcome::Found { value, revision },
                    },
                },
            }
        }

        /// Appends a write to the log (after a random number of other keys' entries) and applies it.
        fn write(&mut self, rng: &mut Rng, key: &str, value: Option<u64>) -> u64 {
            self.log_index += 1 + rng.below(3);
            match value {
                Some(value) => self.records.insert(key.to_owned(), (value, self.log_index)),
                None => self.records.remove(key),
            };
            self.log_index
        }
    }

    /// Runs random operations against a real sequential store, each taking effect at a random instant
    /// inside its own `[call, ret]` interval (clients issue their operations one after the other, so
    /// intervals of different clients overlap at random). Indeterminate writes take effect or not with
    /// equal chance. Such histories are linearizable by construction.
    fn sequential_store_history(seed: u64, shape: &Shape) -> Vec<Operation> {
        let mut rng = Rng::new(seed);
        // (instant of effect, client, call, ret)
        let mut planned = Vec::new();
        for client in 0..shape.clients {
            let mut now = rng.below(50);
            for _ in 0..shape.ops_per_client {
                let call = now + rng.below(30);
                let at = call + rng.below(shape.latency);
                let ret = at + rng.below(shape.latency);
                planned.push((at, client, call, ret));
                now = ret + 1;
            }
        }
        planned.sort_unstable();
        let mut store = SequentialStore::default();
        let mut last_seen: HashMap<(u64, String), u64> = HashMap::new();
        let mut history = Vec::new();
        for (value, (_, client, call, ret)) in (1..).zip(planned) {
            let key = format!("key-{}", rng.below(shape.keys));
            let expected_revision = match rng.below(10) {
                0..=2 => 0,
                3..=7 => last_seen.get(&(client, key.clone())).copied().unwrap_or(0),
                _ => 1 + rng.below(store.log_index + 2),
            };
            let command = match rng.below(10) {
                0..=1 => create(value, CreateOutcome::Indeterminate),
                2..=4 => update(value, expected_revision, UpdateOutcome::Indeterminate),
                5 => delete(expected_revision, DeleteOutcome::Indeterminate),
                _ => Command::Read {
                    outcome: ReadOutcome::Indeterminate,
                },
            };
            let command = if rng.percent(shape.indeterminate_percent) {
                if rng.percent(50) {
                    store.execute(&mut rng, &key, command);
                }
                made_indeterminate(command)
            } else {
                let command = store.execute(&mut rng, &key, command);
                let observed = match command {
                    Command::Create {
                        outcome: CreateOutcome::Ok { revision },
                        ..
                    }
                    | Command::Update {
                        outcome: UpdateOutcome::Ok { revision },
                        ..
                    }
                    | Command::Read {
                        outcome: ReadOutcome::Found { revision, .. },
                    } => Some(revision),
                    _ => None,
                };
                if let Some(revision) = observed {
                    last_seen.insert((client, key.clone()), revision);
                }
                command
            };
            history.push(Operation::new(client, key, call, ret, command));
        }
        // The checker does not care about the order operations are listed in.
        history.reverse();
        history
    }

    const SMALL: Shape = Shape {
        clients: 5,
        ops_per_client: 40,
        keys: 3,
        indeterminate_percent: 4,
        latency: 100,
    };

    #[test]
    fn histories_executed_by_a_sequential_store_are_always_linearizable() {
        let start = Instant::now();
        let mut states = 0;
        for seed in 0..300 {
            let history = sequential_store_history(seed, &SMALL);
            match check(&history, BUDGET) {
                Ok(report) => states += report.states_explored,
                Err(error) => panic!("seed {seed}: {error}"),
            }
        }
        println!(
            "300 histories of 200 operations checked in {:?}, {states} states",
            start.elapsed()
        );
    }

    #[test]
    fn a_read_of_a_value_nobody_wrote_is_always_a_violation() {
        let mut mutated = 0;
        for seed in 0..200 {
            let mut history = sequential_store_history(seed, &SMALL);
            let reads: Vec<usize> = (0..history.len())
                .filter(|&i| {
                    matches!(
                        history[i].command,
                        Command::Read {
                            outcome: ReadOutcome::Found { .. }
                        }
                    )
                })
                .collect();
            let Some(&victim) = reads.get(usize::try_from(seed).unwrap_or(0) % reads.len().max(1)) else {
                continue;
            };
            if let Command::Read {
                outcome: ReadOutcome::Found { value, .. },
            } = &mut history[victim].command
            {
                *value = 0; // values written start at 1
            }
            mutated += 1;
            match check(&history, BUDGET) {
                Err(CheckError::Violation { key, .. }) => assert_eq!(key, history[victim].key),
                other => panic!("seed {seed}: expected a violation, got {other:?}"),
            }
        }
        assert!(mutated > 150);
    }

    #[test]
    fn mutating_one_read_never_panics_and_is_usually_caught() {
        let (mut violations, mut mutated) = (0, 0);
        for seed in 0..300 {
            let mut history = sequential_store_history(seed, &SMALL);
            let mut rng = Rng::new(seed ^ 0xABCD);
            let reads: Vec<usize> = (0..history.len())
                .filter(|&i| {
                    matches!(
                        history[i].command,
                        Command::Read {
                            outcome: ReadOutcome::Found { .. }
                        }
                    )
                })
                .collect();
            if reads.is_empty() {
                continue;
            }
            let victim = reads[usize::try_from(rng.below(reads.len() as u64)).unwrap_or(0)];
            if let Command::Read {
                outcome: ReadOutcome::Found { value, revision },
            } = &mut history[victim].command
            {
                match rng.below(3) {
                    0 => *value = value.saturating_sub(1 + rng.below(3)),
                    1 => *revision = revision.saturating_sub(1 + rng.below(3)),
                    _ => *revision += 1 + rng.below(3),
                }
            }
            mutated += 1;
            match check(&history, BUDGET) {
                Ok(_) => {}
                Err(CheckError::Violation { .. }) => violations += 1,
                Err(other) => panic!("seed {seed}: {other}"),
            }
        }
        println!("{violations} of {mutated} mutated histories were violations");
        assert!(violations * 2 > mutated, "{violations} of {mutated}");
    }

    #[test]
    fn a_few_thousand_operations_check_well_under_a_second() {
        // About 1,000 operations on each of four keys, eight clients, 2% indeterminate.
        let shape = Shape {
            clients: 8,
            ops_per_client: 500,
            keys: 4,
            indeterminate_percent: 2,
            latency: 150,
        };
        let history = sequential_store_history(7, &shape);
        let start = Instant::now();
        let report = check(&history, BUDGET).expect("linearizable by construction");
        let elapsed = start.elapsed();
        println!("{report:?} in {elapsed:?}");
        assert_eq!(report.operations, history.len() - dropped_reads(&history));
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    }

    fn dropped_reads(history: &[Operation]) -> usize {
        history
            .iter()
            .filter(|op| {
                matches!(
                    op.command,
                    Command::Read {
                        outcome: ReadOutcome::Indeterminate
                    }
                )
            })
            .count()
    }

    #[test]
    fn a_tiny_budget_on_a_large_concurrent_history_times_out() {
        // Forty concurrent writes that may or may not have happened, and a read of a value nobody
        // wrote: refuting it means trying every subset of the writes.
        let mut history: Vec<Operation> = (0..40)
            .map(|i| op(i, i, 0, update(i + 1, 0, UpdateOutcome::Indeterminate)))
            .collect();
        history.push(op(0, 0, 0, created(1_000, 1)));
        history.push(op(99, 0, 1_000, read(0, 77)));
        let start = Instant::now();
        let result = check(&history, Duration::from_millis(20));
        assert!(
            matches!(&result, Err(CheckError::Timeout { key, explored }) if key == KEY && *explored > 0),
            "{result:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    /// A model-free oracle: tries every real-time-respecting order of the operations, every subset of
    /// indeterminate writes taking effect and every explicit revision (up to a bound large enough to
    /// be equivalent to all) for each of them, executing the store's rules directly.
    fn brute_force(history: &[Operation]) -> bool {
        let ops: Vec<&Operation> = history
            .iter()
            .filter(|op| {
                !matches!(
                    op.command,
                    Command::Read {
                        outcome: ReadOutcome::Indeterminate
                    }
                )
            })
            .collect();
        let slack = ops.len() as u64 + 2;
        let bound = ops.iter().fold(slack, |bound, op| {
            let mentioned = match op.command {
                Command::Create {
                    outcome: CreateOutcome::Ok { revision },
                    ..
                }
                | Command::Update {
                    outcome: UpdateOutcome::Ok { revision },
                    ..
                }
                | Command::Read {
                    outcome: ReadOutcome::Found { revision, .. },
                }
                | Command::Update {
                    expected_revision: revision,
                    ..
                }
                | Command::Delete {
                    expected_revision: revision,
                    ..
                } => revision,
                _ => 0,
            };
            bound.max(mentioned + slack)
        });
        explore(&ops, 0, None, 0, bound, &mut HashSet::new())
    }

    /// A configuration of [`brute_force`]: operations placed, record, largest revision assigned.
    type Configuration = (u64, Option<(u64, u64)>, u64);

    /// One level of [`brute_force`]: `placed` operations are done, leaving `record`, and `last` is the
    /// largest revision assigned so far. `failed` remembers configurations known to lead nowhere.
    fn explore(
        ops: &[&Operation],
        placed: u64,
        record: Option<(u64, u64)>,
        last: u64,
        bound: u64,
        failed: &mut HashSet<Configuration>,
    ) -> bool {
        let pending = |i: usize| placed & (1 << i) == 0;
        if (0..ops.len()).all(|i| !pending(i) || ops[i].is_indeterminate()) {
            return true;
        }
        if failed.contains(&(placed, record, last)) {
            return false;
        }
        for (i, op) in ops.iter().enumerate() {
            let must_wait = (0..ops.len())
                .any(|j| j != i && pending(j) && !ops[j].is_indeterminate() && ops[j].ret < op.call);
            if !pending(i) || must_wait {
                continue;
            }
            let matches = |expected: u64| expected == 0 || record.is_some_and(|(_, r)| r == expected);
            let conflicts = |expected: u64| expected != 0 && record.is_none_or(|(_, r)| r != expected);
            let unchanged = vec![(record, last)];
            let assigned = |value: u64, revision: u64| {
                if revision > last {
                    vec![(Some((value, revision)), revision)]
                } else {
                    vec![]
                }
            };
            let any_revision = |value: u64| (last + 1..=bound).map(|r| (Some((value, r)), r)).collect();
            let successors: Vec<(Option<(u64, u64)>, u64)> = match op.command {
                Command::Create { value, outcome } => match outcome {
                    CreateOutcome::Ok { revision } if record.is_none() => assigned(value, revision),
                    CreateOutcome::AlreadyExists if record.is_some() => unchanged,
                    CreateOutcome::Indeterminate if record.is_none() => any_revision(value),
                    _ => vec![],
                },
                Command::Update {
                    value,
                    expected_revision: e,
                    outcome,
                } => match outcome {
                    UpdateOutcome::Ok { revision } if record.is_some() && matches(e) => {
                        assigned(value, revision)
                    }
                    UpdateOutcome::Conflict if conflicts(e) => unchanged,
                    UpdateOutcome::NotFound if record.is_none() => unchanged,
                    UpdateOutcome::Indeterminate if record.is_some() && matches(e) => any_revision(value),
                    _ => vec![],
                },
                Command::Delete {
                    expected_revision: e,
                    outcome,
                } => match outcome {
                    DeleteOutcome::Ok | DeleteOutcome::Indeterminate if record.is_some() && matches(e) => {
                        vec![(None, last)]
                    }
                    DeleteOutcome::Conflict if conflicts(e) => unchanged,
                    DeleteOutcome::NotFound if record.is_none() => unchanged,
                    _ => vec![],
                },
                Command::Read { outcome } => match outcome {
                    ReadOutcome::Found { value, revision } if record == Some((value, revision)) => unchanged,
                    ReadOutcome::NotFound if record.is_none() => unchanged,
                    _ => vec![],
                },
            };
            if successors
                .into_iter()
                .any(|(record, last)| explore(ops, placed | (1 << i), record, last, bound, failed))
            {
                return true;
            }
        }
        failed.insert((placed, record, last));
        false
    }

    /// Replaces the outcome (and sometimes the expected revision) of `command` with a random one.
    fn scramble(rng: &mut Rng, command: &mut Command) {
        let revision = rng.below(12);
        let expected = |rng: &mut Rng, current: u64| if rng.percent(30) { rng.below(12) } else { current };
        *command = match *command {
            Command::Create { value, .. } => create(
                value,
                match rng.below(3) {
                    0 => CreateOutcome::Ok { revision },
                    1 => CreateOutcome::AlreadyExists,
                    _ => CreateOutcome::Indeterminate,
                },
            ),
            Command::Update {
                value,
                expected_revision,
                ..
            } => update(
                value,
                expected(rng, expected_revision),
                match rng.below(4) {
                    0 => UpdateOutcome::Ok { revision },
                    1 => UpdateOutcome::Conflict,
                    2 => UpdateOutcome::NotFound,
                    _ => UpdateOutcome::Indeterminate,
                },
            ),
            Command::Delete {
                expected_revision, ..
            } => delete(
                expected(rng, expected_revision),
                match rng.below(4) {
                    0 => DeleteOutcome::Ok,
                    1 => DeleteOutcome::Conflict,
                    2 => DeleteOutcome::NotFound,
                    _ => DeleteOutcome::Indeterminate,
                },
            ),
            Command::Read { outcome } => Command::Read {
                outcome: match (rng.below(3), outcome) {
                    (0, ReadOutcome::Found { value, .. }) => ReadOutcome::Found { value, revision },
                    (1, _) => ReadOutcome::NotFound,
                    _ => ReadOutcome::Found {
                        value: rng.below(8),
                        revision,
                    },
                },
            },
        };
    }

    #[test]
    fn verdicts_agree_with_a_brute_force_search_over_explicit_revisions() {
        let shapes = [
            (
                3_000,
                Shape {
                    clients: 3,
                    ops_per_client: 3,
                    keys: 1,
                    indeterminate_percent: 25,
                    latency: 60,
                },
            ),
            (
                1_000,
                Shape {
                    clients: 3,
                    ops_per_client: 4,
                    keys: 1,
                    indeterminate_percent: 35,
                    latency: 120,
                },
            ),
            (
                300,
                Shape {
                    clients: 4,
                    ops_per_client: 4,
                    keys: 1,
                    indeterminate_percent: 20,
                    latency: 150,
                },
            ),
        ];
        let mut linearizable = 0;
        for (histories, shape) in &shapes {
            for seed in 0..*histories {
                let mut history = sequential_store_history(seed, shape);
                let mut rng = Rng::new(seed ^ 0x5EED);
                for _ in 0..rng.below(3) {
                    let victim = usize::try_from(rng.below(history.len() as u64)).expect("works in the test");
                    scramble(&mut rng, &mut history[victim].command);
                }
                let expected = brute_force(&history);
                linearizable += u64::from(expected);
                match check(&history, BUDGET) {
                    Ok(_) if expected => {}
                    Err(CheckError::Violation { .. }) if !expected => {}
                    other => panic!(
                        "seed {seed}: brute force says {expected}, checker says {other:?} for\n{}",
                        history
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("\n")
                    ),
                }
            }
        }
        let total: u64 = shapes.iter().map(|(histories, _)| histories).sum();
        println!("{linearizable} of {total} histories were linearizable");
        assert!(
            linearizable > total / 4 && linearizable < total * 3 / 4,
            "{linearizable} of {total}"
        );
    }
}
