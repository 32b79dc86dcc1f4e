//! What this control-plane node knows of the data-plane nodes that subscribed
//! to it: labels, applied version, last ACK/NACK and its error, last seen.

use pylon_proto::publish::v1::{Ack, DataPlaneNode, Hello, data_plane_node::LastResult};
use pylon_proto::wkt::Timestamp;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Nodes gone for longer than this are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

pub struct Registry {
    control_plane_node: u64,
    nodes: Mutex<BTreeMap<String, Entry>>,
    /// The traffic counts this node's data planes reported.
    pub traffic: super::traffic::Traffic,
}

struct Entry {
    node: DataPlaneNode,
    /// Which of the node's streams is current: a reconnect may arrive before
    /// the old stream is seen closing.
    generation: u64,
    seen: SystemTime,
}

fn timestamp(at: SystemTime) -> Timestamp {
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

impl Registry {
    pub fn new(control_plane_node: u64) -> Registry {
        Registry {
            control_plane_node,
            nodes: Mutex::new(BTreeMap::new()),
            traffic: super::traffic::Traffic::default(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, Entry>) -> R) -> R {
        // Entries are plain data, consistent after every statement: a poisoned
        // lock is used as is.
        let mut nodes = self.nodes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut nodes)
    }

    /// A node opened a stream; returns the stream's generation.
    pub fn connect(&self, hello: &Hello, address: String) -> u64 {
        let now = SystemTime::now();
        self.with(|nodes| {
            let entry = nodes.entry(hello.node_id.clone()).or_insert_with(|| Entry {
                node: DataPlaneNode {
                    node_id: hello.node_id.clone(),
                    ..Default::default()
                },
                generation: 0,
                seen: now,
            });
            entry.generation += 1;
            entry.seen = now;
            let node = &mut entry.node;
            node.labels = hello.labels.clone();
            node.applied_version = hello.version;
            node.connected = true;
            node.connected_since = Some(timestamp(now));
            node.last_seen = Some(timestamp(now));
            node.control_plane_node = self.control_plane_node;
            node.address = address;
            node.software_version = hello.software_version.clone();
            node.cluster_id = hello.cluster_id.clone();
            node.warning = hello.warning.clone();
            entry.generation
        })
    }

    fn touch(&self, node_id: &str, f: impl FnOnce(&mut DataPlaneNode)) {
        let now = SystemTime::now();
        self.with(|nodes| {
            if let Some(entry) = nodes.get_mut(node_id) {
                entry.seen = now;
                entry.node.last_seen = Some(timestamp(now));
                f(&mut entry.node);
            }
        });
    }

    /// The node serves `ack.version` now (lower than before when it adopted
    /// another cluster's config, or a cluster that went back).
    pub fn ack(&self, node_id: &str, ack: &Ack) {
        if !ack.warning.is_empty() {
            tracing::warn!(node = node_id, version = ack.version, warning = %ack.warning, "data plane warns");
        }
        self.touch(node_id, |node| {
            node.applied_version = ack.version;
            node.last_result = LastResult::Ack as i32;
            node.last_result_version = ack.version;
            node.cluster_id = ack.cluster_id.clone();
            node.warning = ack.warning.clone();
            node.last_error.clear();
        });
    }

    pub fn nack(&self, node_id: &str, version: u64, error: &str) {
        tracing::warn!(
            node = node_id,
            version,
            error,
            "data plane rejected a config version"
        );
        self.touch(node_id, |node| {
            node.last_result = LastResult::Nack as i32;
            node.last_result_version = version;
            node.last_error = error.to_owned();
        });
    }

    pub fn heartbeat(&self, node_id: &str, version: u64) {
        self.touch(node_id, |node| node.applied_version = version);
    }

    /// The stream of `generation` ended.
    pub fn disconnect(&self, node_id: &str, generation: u64) {
        let now = SystemTime::now();
        self.with(|nodes| {
            if let Some(entry) = nodes.get_mut(node_id)
                && entry.generation == generation
            {
                entry.seen = now;
                entry.node.connected = false;
                entry.node.last_seen = Some(timestamp(now));
            }
        });
    }

    /// Every node this control-plane node knows of, by node id.
    pub fn list(&self) -> Vec<DataPlaneNode> {
        let now = SystemTime::now();
        self.with(|nodes| {
            nodes.retain(|_, e| {
                e.node.connected || now.duration_since(e.seen).unwrap_or_default() < FORGET_AFTER
            });
            nodes.values().map(|e| e.node.clone()).collect()
        })
    }
}

/// Merges several control-plane nodes' views: per data-plane node, a
/// connected record wins, then the most recently seen.
pub fn merge(views: impl IntoIterator<Item = DataPlaneNode>) -> Vec<DataPlaneNode> {
    let mut merged: BTreeMap<String, DataPlaneNode> = BTreeMap::new();
    for node in views {
        let key = |n: &DataPlaneNode| {
            let seen = n
                .last_seen
                .as_ref()
                .map(|t| (t.seconds, t.nanos))
                .unwrap_or_default();
            (n.connected, seen)
        };
        match merged.get(&node.node_id) {
            Some(existing) if key(existing) >= key(&node) => {}
            _ => {
                merged.insert(node.node_id.clone(), node);
            }
        }
    }
    merged.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(id: &str, version: u64) -> Hello {
        Hello {
            node_id: id.into(),
            version,
            ..Default::default()
        }
    }

    #[test]
    fn a_node_is_recorded_with_its_acks_and_nacks() {
        let registry = Registry::new(1);
        let generation = registry.connect(&hello("dp-1", 3), "127.0.0.1:1".into());
        registry.ack(
            "dp-1",
            &Ack {
                version: 5,
                ..Default::default()
            },
        );
        registry.nack("dp-1", 7, "certificate file missing");
        let nodes = registry.list();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].applied_version, 5);
        assert_eq!(nodes[0].last_result, LastResult::Nack as i32);
        assert_eq!(nodes[0].last_result_version, 7);
        assert_eq!(nodes[0].last_error, "certificate file missing");
        registry.disconnect("dp-1", generation);
        assert!(!registry.list()[0].connected);
    }

    #[test]
    fn an_old_stream_closing_does_not_disconnect_a_newer_one() {
        let registry = Registry::new(1);
        let old = registry.connect(&hello("dp-1", 3), String::new());
        let _new = registry.connect(&hello("dp-1", 3), String::new());
        registry.disconnect("dp-1", old);
        assert!(registry.list()[0].connected);
    }

    #[test]
    fn merging_views_prefers_the_connected_record() {
        let stale = DataPlaneNode {
            node_id: "dp-1".into(),
            connected: false,
            last_seen: Some(Timestamp {
                seconds: 100,
                nanos: 0,
            }),
            control_plane_node: 1,
            ..Default::default()
        };
        let live = DataPlaneNode {
            connected: true,
            last_seen: Some(Timestamp {
                seconds: 50,
                nanos: 0,
            }),
            control_plane_node: 2,
            ..stale.clone()
        };
        let merged = merge([stale.clone(), live.clone()]);
        assert_eq!(merged, vec![live.clone()]);
        assert_eq!(merge([live.clone(), stale]), vec![live]);
    }
}
