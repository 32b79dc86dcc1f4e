//! The Raft log, hard state, conf state, latest snapshot and applied index in
//! RocksDB.
//!
//! Column families are named in [`cf`]; log keys are big-endian indexes so they
//! sort in log order. Writes that Raft's safety depends on (entries, hard state,
//! snapshots) are fsynced before the Ready loop goes on.

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The column families, in one place.
pub mod cf {
    /// `index (u64, big-endian)` → encoded `eraftpb::Entry`.
    pub const LOG: &str = "raft_log";
    /// Small records: hard state, conf state, applied index, peer addresses.
    pub const META: &str = "raft_meta";
    /// `index (u64, big-endian)` → encoded `eraftpb.Snapshot`; the highest is
    /// the latest (older ones are deleted when a newer one takes effect).
    pub const SNAPSHOTS: &str = "raft_snapshots";
    pub const ALL: [&str; 3] = [LOG, META, SNAPSHOTS];
}

/// Keys of the [`cf::META`] column family.
mod key {
    pub const HARD_STATE: &[u8] = b"hard_state";
    pub const CONF_STATE: &[u8] = b"conf_state";
    pub const APPLIED_INDEX: &[u8] = b"applied_index";
    pub const ADDRESSES: &[u8] = b"peer_addresses";
}

#[derive(Debug, thiserror::Error)]
pub enum StorageFailure {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt record {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("column family {0} is missing")]
    MissingColumnFamily(&'static str),
}

fn corrupt(what: &'static str) -> impl FnOnce(protobuf::ProtobufError) -> StorageFailure {
    move |e| StorageFailure::Corrupt {
        what,
        detail: e.to_string(),
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Raft storage on RocksDB. Reads come from the database (and a few cached
/// values); the Ready loop is the only writer.
pub struct RocksStorage {
    db: Arc<DB>,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    last_index: u64,
    sync: WriteOptions,
    /// Set when a peer needs a newer snapshot than the stored one.
    snapshot_wanted: AtomicBool,
}

impl RocksStorage {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<RocksStorage, StorageFailure> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = cf::ALL
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DB::open_cf_descriptors(&options, dir, families)?;
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        let mut storage = RocksStorage {
            db: Arc::new(db),
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            snapshot: Snapshot::default(),
            last_index: 0,
            sync,
            snapshot_wanted: AtomicBool::new(false),
        };
        if let Some(bytes) = storage.meta(key::HARD_STATE)? {
            storage.hard_state = HardState::parse_from_bytes(&bytes).map_err(corrupt("hard state"))?;
        }
        if let Some(bytes) = storage.meta(key::CONF_STATE)? {
            storage.conf_state = ConfState::parse_from_bytes(&bytes).map_err(corrupt("conf state"))?;
        }
        let latest = storage
            .db
            .iterator_cf(storage.cf(cf::SNAPSHOTS)?, IteratorMode::End)
            .next()
            .transpose()?;
        if let Some((_, bytes)) = latest {
            storage.snapshot = Snapshot::parse_from_bytes(&bytes).map_err(corrupt("snapshot"))?;
        }
        storage.last_index = storage.read_last_index()?;
        Ok(storage)
    }

    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, StorageFailure> {
        self.db
            .cf_handle(name)
            .ok_or(StorageFailure::MissingColumnFamily(name))
    }

    fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageFailure> {
        Ok(self.db.get_cf(self.cf(cf::META)?, key)?)
    }

    fn read_last_index(&self) -> Result<u64, StorageFailure> {
        let log = self.cf(cf::LOG)?;
        match self.db.iterator_cf(log, IteratorMode::End).next() {
            Some(item) => {
                let (key, _) = item?;
                let bytes: [u8; 8] = key.as_ref().try_into().map_err(|_| StorageFailure::Corrupt {
                    what: "log key",
                    detail: format!("{} bytes", key.len()),
                })?;
                Ok(u64::from_be_bytes(bytes))
            }
            None => Ok(self.snapshot.get_metadata().index),
        }
    }

    /// Whether this node has never been part of a cluster.
    pub fn is_empty(&self) -> bool {
        self.conf_state == ConfState::default()
            && self.last_index == 0
            && self.snapshot.get_metadata().index == 0
    }

    /// Writes the initial membership of a brand-new cluster.
    pub fn bootstrap(&mut self, voters: Vec<u64>) -> Result<(), StorageFailure> {
        let mut conf_state = ConfState::default();
        conf_state.set_voters(voters);
        self.set_conf_state(conf_state)
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// The latest snapshot (index 0 when there is none yet).
    pub fn latest_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Appends entries, dropping any conflicting tail, and persists the hard
    /// state if it changed — one fsynced write.
    pub fn persist(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), StorageFailure> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        let log = self.cf(cf::LOG)?;
        let mut new_last = self.last_index;
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            // A new leader overwrote our tail: entries past its last one go too.
            if first.index <= self.last_index && last.index < self.last_index {
                batch.delete_range_cf(log, index_key(last.index + 1), index_key(self.last_index + 1));
            }
            for entry in entries {
                let bytes = entry.write_to_bytes().map_err(corrupt("entry"))?;
                batch.put_cf(log, index_key(entry.index), bytes);
            }
            new_last = last.index;
        }
        if let Some(hard_state) = hard_state {
            let bytes = hard_state.write_to_bytes().map_err(corrupt("hard state"))?;
            batch.put_cf(self.cf(cf::META)?, key::HARD_STATE, bytes);
        }
        self.db.write_opt(batch, &self.sync)?;
        self.last_index = new_last;
        if let Some(hard_state) = hard_state {
            self.hard_state = hard_state.clone();
        }
        Ok(())
    }

    /// Whether a peer asked for a snapshot the stored one cannot serve (it
    /// predates the peer's membership); clears the request.
    pub fn take_snapshot_request(&self) -> bool {
        self.snapshot_wanted.swap(false, Ordering::Relaxed)
    }

    /// Records a new commit index (from a light ready).
    pub fn set_commit(&mut self, commit: u64) -> Result<(), StorageFailure> {
        let mut hard_state = self.hard_state.clone();
        hard_state.set_commit(commit);
        self.persist(&[], Some(&hard_state))
    }

    pub fn set_conf_state(&mut self, conf_state: ConfState) -> Result<(), StorageFailure> {
        let bytes = conf_state.write_to_bytes().map_err(corrupt("conf state"))?;
        self.db
            .put_cf_opt(self.cf(cf::META)?, key::CONF_STATE, bytes, &self.sync)?;
        self.conf_state = conf_state;
        Ok(())
    }

    /// Replaces the log with a snapshot received from the leader.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageFailure> {
        let meta = snapshot.get_metadata().clone();
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(cf::LOG)?, index_key(0), index_key(u64::MAX));
        let mut hard_state = self.hard_state.clone();
        hard_state.set_term(hard_state.get_term().max(meta.get_term()));
        hard_state.set_commit(meta.get_index());
        let snapshots = self.cf(cf::SNAPSHOTS)?;
        batch.delete_range_cf(snapshots, index_key(0), index_key(meta.get_index()));
        batch.put_cf(
            snapshots,
            index_key(meta.get_index()),
            snapshot.write_to_bytes().map_err(corrupt("snapshot"))?,
        );
        let meta_cf = self.cf(cf::META)?;
        batch.put_cf(
            meta_cf,
            key::HARD_STATE,
            hard_state.write_to_bytes().map_err(corrupt("hard state"))?,
        );
        batch.put_cf(
            meta_cf,
            key::CONF_STATE,
            meta.get_conf_state()
                .write_to_bytes()
                .map_err(corrupt("conf state"))?,
        );
        batch.put_cf(meta_cf, key::APPLIED_INDEX, meta.get_index().to_be_bytes());
        self.db.write_opt(batch, &self.sync)?;
        self.hard_state = hard_state;
        self.conf_state = meta.get_conf_state().clone();
        self.last_index = meta.get_index();
        self.snapshot = snapshot;
        Ok(())
    }

    /// The metadata of a snapshot of the state machine at `index` (which must be
    /// applied): the entry's term and the current membership.
    pub fn snapshot_at(&self, index: u64) -> Result<Snapshot, StorageFailure> {
        let term = raft::Storage::term(self, index).map_err(|e| StorageFailure::Corrupt {
            what: "term at snapshot index",
            detail: e.to_string(),
        })?;
        let mut meta = SnapshotMetadata::default();
        meta.set_index(index);
        meta.set_term(term);
        meta.set_conf_state(self.conf_state.clone());
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(meta);
        Ok(snapshot)
    }

    /// Something that can write a snapshot from another thread.
    pub fn snapshot_writer(&self) -> SnapshotWriter {
        SnapshotWriter { db: self.db.clone() }
    }

    /// Makes a written snapshot the latest and drops the log up to it. A
    /// snapshot older than the current one (a newer one came from the leader
    /// meanwhile) is ignored.
    pub fn commit_snapshot(&mut self, snapshot: Snapshot) -> Result<bool, StorageFailure> {
        let index = snapshot.get_metadata().index;
        if index <= self.snapshot.get_metadata().index {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(cf::LOG)?, index_key(0), index_key(index + 1));
        batch.delete_range_cf(self.cf(cf::SNAPSHOTS)?, index_key(0), index_key(index));
        self.db.write_opt(batch, &self.sync)?;
        self.snapshot = snapshot;
        Ok(true)
    }

    /// Takes a snapshot with `data` at `index` and compacts, all on this thread.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<(), StorageFailure> {
        let mut snapshot = self.snapshot_at(index)?;
        snapshot.set_data(data.into());
        self.snapshot_writer().write(&snapshot)?;
        self.commit_snapshot(snapshot)?;
        Ok(())
    }

    /// The applied index is written without fsync: after a crash the node
    /// replays a little more of the log, which is harmless.
    pub fn set_applied_index(&self, index: u64) -> Result<(), StorageFailure> {
        self.db
            .put_cf(self.cf(cf::META)?, key::APPLIED_INDEX, index.to_be_bytes())?;
        Ok(())
    }

    pub fn applied_index(&self) -> Result<u64, StorageFailure> {
        match self.meta(key::APPLIED_INDEX)? {
            None => Ok(0),
            Some(bytes) => {
                let bytes: [u8; 8] = bytes.as_slice().try_into().map_err(|_| StorageFailure::Corrupt {
                    what: "applied index",
                    detail: format!("{} bytes", bytes.len()),
                })?;
                Ok(u64::from_be_bytes(bytes))
            }
        }
    }

    /// Known peer addresses, so a restarted node can reach its peers without flags.
    pub fn save_addresses(
        &self,
        addresses: &std::collections::BTreeMap<u64, String>,
    ) -> Result<(), StorageFailure> {
        let bytes = serde_json::to_vec(addresses).map_err(|e| StorageFailure::Corrupt {
            what: "peer addresses",
            detail: e.to_string(),
        })?;
        self.db.put_cf(self.cf(cf::META)?, key::ADDRESSES, bytes)?;
        Ok(())
    }

    pub fn load_addresses(&self) -> Result<std::collections::BTreeMap<u64, String>, StorageFailure> {
        match self.meta(key::ADDRESSES)? {
            None => Ok(Default::default()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| StorageFailure::Corrupt {
                what: "peer addresses",
                detail: e.to_string(),
            }),
        }
    }

    /// Entries in `[low, high)` straight from the database.
    fn read_entries(&self, low: u64, high: u64, max_size: Option<u64>) -> Result<Vec<Entry>, StorageFailure> {
        let log = self.cf(cf::LOG)?;
        let mut entries = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        let start = index_key(low);
        let iter = self
            .db
            .iterator_cf(log, IteratorMode::From(&start, rocksdb::Direction::Forward));
        for item in iter {
            let (key, value) = item?;
            let index = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| StorageFailure::Corrupt {
                what: "log key",
                detail: format!("{} bytes", key.len()),
            })?);
            if index >= high {
                break;
            }
            size += value.len() as u64;
            if !entries.is_empty() && max_size.is_some_and(|max| size > max) {
                break;
            }
            entries.push(Entry::parse_from_bytes(&value).map_err(corrupt("entry"))?);
        }
        Ok(entries)
    }
}

/// Writes snapshots (the big, slow part of compaction) off the Raft thread.
/// A written snapshot takes effect only through [`RocksStorage::commit_snapshot`];
/// until then it is just the highest entry of a column family that `open`
/// would pick up — which is safe, because the log still holds its entries.
pub struct SnapshotWriter {
    db: Arc<DB>,
}

impl SnapshotWriter {
    pub fn write(&self, snapshot: &Snapshot) -> Result<(), StorageFailure> {
        let snapshots = self
            .db
            .cf_handle(cf::SNAPSHOTS)
            .ok_or(StorageFailure::MissingColumnFamily(cf::SNAPSHOTS))?;
        let bytes = snapshot.write_to_bytes().map_err(corrupt("snapshot"))?;
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db
            .put_cf_opt(snapshots, index_key(snapshot.get_metadata().index), bytes, &sync)?;
        Ok(())
    }
}

fn store_error(e: StorageFailure) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

impl raft::Storage for RocksStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.snapshot.get_metadata().index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let entries = self
            .read_entries(low, high, max_size.into())
            .map_err(store_error)?;
        if entries.first().is_some_and(|e| e.index != low) || entries.is_empty() && low < high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let snapshot = self.snapshot.get_metadata();
        if index == snapshot.index {
            return Ok(snapshot.term);
        }
        if index < snapshot.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if index > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let log = self.cf(cf::LOG).map_err(store_error)?;
        match self.db.get_cf(log, index_key(index)) {
            Ok(Some(bytes)) => Ok(Entry::parse_from_bytes(&bytes)
                .map_err(corrupt("entry"))
                .map_err(store_error)?
                .term),
            Ok(None) => Err(raft::Error::Store(StorageError::Unavailable)),
            Err(e) => Err(store_error(e.into())),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snapshot.get_metadata().index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, _request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // A peer added after the stored snapshot was taken must receive one that
        // lists it as a member; ask the Ready loop for a fresh one and let Raft retry.
        let conf = self.snapshot.get_metadata().get_conf_state();
        let member = conf.voters.contains(&to)
            || conf.learners.contains(&to)
            || conf.voters_outgoing.contains(&to)
            || conf.learners_next.contains(&to);
        if !member {
            self.snapshot_wanted.store(true, Ordering::Relaxed);
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: format!("e{index}").into_bytes().into(),
            ..Default::default()
        }
    }

    #[test]
    fn entries_hard_state_and_conf_state_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut storage = RocksStorage::open(dir.path()).expect("open");
            assert!(storage.is_empty());
            storage.bootstrap(vec![1, 2, 3]).expect("bootstrap");
            let hs = HardState {
                term: 2,
                vote: 1,
                commit: 2,
                ..Default::default()
            };
            storage
                .persist(&[entry(1, 1), entry(2, 2), entry(3, 2)], Some(&hs))
                .expect("persist");
            storage.set_applied_index(2).expect("applied");
        }
        let storage = RocksStorage::open(dir.path()).expect("reopen");
        assert!(!storage.is_empty());
        assert_eq!(storage.hard_state().term, 2);
        assert_eq!(storage.conf_state().voters, vec![1, 2, 3]);
        assert_eq!(storage.last_index().expect("last"), 3);
        assert_eq!(storage.applied_index().expect("applied"), 2);
        let entries = storage
            .entries(1, 4, None, GetEntriesContext::empty(false))
            .expect("entries");
        assert_eq!(entries.iter().map(|e| e.index).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn a_conflicting_append_drops_the_old_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut storage = RocksStorage::open(dir.path()).expect("open");
        storage
            .persist(&[entry(1, 1), entry(2, 1), entry(3, 1), entry(4, 1)], None)
            .expect("persist");
        storage
            .persist(&[entry(2, 1), entry(3, 1), entry(4, 1), entry(5, 1)], None)
            .expect("an overlapping append that also extends the log");
        assert_eq!(storage.last_index().expect("last"), 5);
        storage.persist(&[entry(3, 2)], None).expect("overwrite");
        assert_eq!(storage.last_index().expect("last"), 3);
        assert_eq!(storage.term(3).expect("term"), 2);
        assert!(storage.term(4).is_err());
        drop(storage);
        let storage = RocksStorage::open(dir.path()).expect("reopen");
        assert_eq!(
            storage.last_index().expect("last"),
            3,
            "index 4 is gone on disk too"
        );
    }

    #[test]
    fn compaction_keeps_the_term_of_the_snapshot_index_and_rejects_older_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut storage = RocksStorage::open(dir.path()).expect("open");
        storage
            .persist(&[entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2)], None)
            .expect("persist");
        storage.bootstrap(vec![1, 2]).expect("members");
        storage.compact(3, b"state".to_vec()).expect("compact");
        assert_eq!(storage.first_index().expect("first"), 4);
        assert_eq!(storage.term(3).expect("term"), 2);
        assert!(matches!(
            storage.entries(2, 4, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(storage.snapshot(0, 2).expect("snapshot").get_data(), b"state");
        assert!(
            matches!(
                storage.snapshot(0, 3),
                Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
            ),
            "a peer the snapshot does not list gets a fresh one later"
        );
        assert!(storage.take_snapshot_request());
        assert!(!storage.take_snapshot_request(), "the request is taken once");
        drop(storage);
        let storage = RocksStorage::open(dir.path()).expect("reopen");
        assert_eq!(storage.first_index().expect("first"), 4);
        assert_eq!(storage.last_index().expect("last"), 4);
    }

    #[test]
    fn a_written_snapshot_takes_effect_on_commit_and_an_older_one_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut storage = RocksStorage::open(dir.path()).expect("open");
        storage.bootstrap(vec![1]).expect("members");
        let entries: Vec<Entry> = (1..=6).map(|i| entry(i, 1)).collect();
        storage.persist(&entries, None).expect("persist");
        let snapshot = |storage: &RocksStorage, index: u64, data: &'static [u8]| {
            let mut snapshot = storage.snapshot_at(index).expect("snapshot");
            snapshot.set_data(data.to_vec().into());
            storage.snapshot_writer().write(&snapshot).expect("write");
            snapshot
        };
        let five = snapshot(&storage, 5, b"five");
        assert_eq!(
            storage.first_index().expect("first"),
            1,
            "written is not yet in effect"
        );
        let three = snapshot(&storage, 3, b"three");
        assert!(storage.commit_snapshot(five).expect("commit"));
        assert_eq!(storage.first_index().expect("first"), 6);
        assert!(
            !storage.commit_snapshot(three).expect("commit"),
            "older than the latest"
        );
        assert_eq!(storage.first_index().expect("first"), 6);
        drop(storage);
        let storage = RocksStorage::open(dir.path()).expect("reopen");
        assert_eq!(storage.latest_snapshot().get_data(), b"five");
        assert_eq!(
            (
                storage.first_index().expect("first"),
                storage.last_index().expect("last")
            ),
            (6, 6)
        );
    }
}
