//! Linearizability under faults: concurrent clients create, compare-and-set,
//! delete and read a few APIs on a real cluster while a nemesis kills
//! (`-9`), pauses (`SIGSTOP`) and partitions nodes (every Raft link of a
//! node through a fault-injecting proxy turned into a black hole); the
//! recorded history is then checked by a Wing–Gong/Porcupine checker.
//!
//! `make test` runs 3 nodes for 25 s; `make chaos` runs 5 nodes for longer
//! (`PYLON_CHAOS_NODES`, `PYLON_CHAOS_SECONDS`).

use pylon_proto::admin::v1::*;
use pylon_proto::config::v1::Api;
use pylon_tests::fault_proxy::{Fault, FaultProxy};
use pylon_tests::linearizability::{
    Command as Op, CreateOutcome, DeleteOutcome, Operation, ReadOutcome, UpdateOutcome, check, nanos_since,
};
use pylon_tests::{Cluster, serial};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Code;

const KEYS: u64 = 4;
const CLIENTS: u64 = 5;
/// How long a client waits for one answer before counting it indeterminate.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// What the checker may spend; exceeding it fails the run.
const CHECK_BUDGET: Duration = Duration::from_secs(30);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator per client (xorshift64*).
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[derive(Default)]
struct Figures {
    operations: AtomicU64,
    acknowledged_writes: AtomicU64,
    indeterminate: AtomicU64,
    kills: AtomicU64,
    pauses: AtomicU64,
    partitions: AtomicU64,
}

/// Every operation of every client, with times from one origin.
struct History {
    origin: Instant,
    operations: Mutex<Vec<Operation>>,
}

impl History {
    fn record(&self, client: u64, key: &str, call: Instant, command: Op) {
        let ret = nanos_since(self.origin, Instant::now());
        let operation = Operation::new(client, key, nanos_since(self.origin, call), ret, command);
        self.operations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(operation);
    }
}

fn key_name(key: u64) -> String {
    format!("lin-{key}")
}

fn api(name: &str, value: u64) -> Api {
    Api {
        name: name.into(),
        description: value.to_string(),
        ..Default::default()
    }
}

fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// One client: random operations on random keys through random nodes, each
/// recorded with its outcome; a call that reached a node and got no clear
/// answer is indeterminate (it may or may not have taken effect).
async fn client(
    id: u64,
    endpoints: Vec<String>,
    history: Arc<History>,
    figures: Arc<Figures>,
    stop: Arc<AtomicBool>,
) {
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15 ^ (id + 1).wrapping_mul(0xff51_afd7_ed55_8ccd));
    let mut revisions: BTreeMap<u64, u64> = BTreeMap::new();
    let mut value = id * 1_000_000;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20 + dice.below(40))).await;
        let endpoint = &endpoints[dice.below(endpoints.len() as u64) as usize];
        // A node that cannot be reached never saw the call: nothing to record.
        let Ok(Ok(mut admin)) =
            tokio::time::timeout(Duration::from_millis(500), pylon_tests::connect(endpoint)).await
        else {
            continue;
        };
        let key = dice.below(KEYS);
        let name = key_name(key);
        value += 1;
        // CAS against the last revision this client saw, sometimes a stale or unconditional one.
        let expected = match dice.below(4) {
            0 => 0,
            1 => revisions.get(&key).copied().unwrap_or(1).saturating_sub(1),
            _ => revisions.get(&key).copied().unwrap_or(0),
        };
        let call = Instant::now();
        let command = match dice.below(10) {
            0..=2 => {
                let answer = admin
                    .create_api(timed(CreateApiRequest {
                        api: Some(api(&name, value)),
                    }))
                    .await;
                let outcome = match answer {
                    Ok(api) => {
                        revisions.insert(key, api.get_ref().revision);
                        CreateOutcome::Ok {
                            revision: api.into_inner().revision,
                        }
                    }
                    Err(s) if s.code() == Code::AlreadyExists => CreateOutcome::AlreadyExists,
                    Err(_) => CreateOutcome::Indeterminate,
                };
                Op::Create { value, outcome }
            }
            3..=4 => {
                let answer = admin
                    .update_api(timed(UpdateApiRequest {
                        api: Some(api(&name, value)),
                        expected_revision: expected,
                    }))
                    .await;
                let outcome = match answer {
                    Ok(api) => {
                        revisions.insert(key, api.get_ref().revision);
                        UpdateOutcome::Ok {
                            revision: api.into_inner().revision,
                        }
                    }
                    Err(s) if s.code() == Code::Aborted => UpdateOutcome::Conflict,
                    Err(s) if s.code() == Code::NotFound => UpdateOutcome::NotFound,
                    Err(_) => UpdateOutcome::Indeterminate,
                };
                Op::Update {
                    value,
                    expected_revision: expected,
                    outcome,
                }
            }
            5..=6 => {
                let answer = admin
                    .delete_api(timed(DeleteApiRequest {
                        name: name.clone(),
                        expected_revision: expected,
                    }))
                    .await;
                let outcome = match answer {
                    Ok(_) => DeleteOutcome::Ok,
                    Err(s) if s.code() == Code::Aborted => DeleteOutcome::Conflict,
                    Err(s) if s.code() == Code::NotFound => DeleteOutcome::NotFound,
                    Err(_) => DeleteOutcome::Indeterminate,
                };
                Op::Delete {
                    expected_revision: expected,
                    outcome,
                }
            }
            _ => {
                let answer = admin
                    .get_api(timed(GetApiRequest {
                        name: name.clone(),
                        consistency: ReadConsistency::Linearizable as i32,
                    }))
                    .await;
                let outcome = match answer {
                    Ok(api) => {
                        let api = api.into_inner();
                        revisions.insert(key, api.revision);
                        ReadOutcome::Found {
                            value: api.description.parse().unwrap_or(u64::MAX),
                            revision: api.revision,
                        }
                    }
                    Err(s) if s.code() == Code::NotFound => ReadOutcome::NotFound,
                    Err(_) => ReadOutcome::Indeterminate,
                };
                Op::Read { outcome }
            }
        };
        figures.operations.fetch_add(1, Ordering::Relaxed);
        let indeterminate = matches!(
            command,
            Op::Create {
                outcome: CreateOutcome::Indeterminate,
                ..
            } | Op::Update {
                outcome: UpdateOutcome::Indeterminate,
                ..
            } | Op::Delete {
                outcome: DeleteOutcome::Indeterminate,
                ..
            } | Op::Read {
                outcome: ReadOutcome::Indeterminate
            }
        );
        let acknowledged = matches!(
            command,
            Op::Create {
                outcome: CreateOutcome::Ok { .. },
                ..
            } | Op::Update {
                outcome: UpdateOutcome::Ok { .. },
                ..
            } | Op::Delete {
                outcome: DeleteOutcome::Ok,
                ..
            }
        );
        if indeterminate {
            figures.indeterminate.fetch_add(1, Ordering::Relaxed);
        }
        if acknowledged {
            figures.acknowledged_writes.fetch_add(1, Ordering::Relaxed);
        }
        history.record(id, &name, call, command);
    }
}

/// Every directed Raft link `from → to` of the cluster, through a proxy.
struct Links(BTreeMap<(u64, u64), FaultProxy>);

impl Links {
    /// Cuts (or heals) every link to and from `node`.
    fn isolate(&self, node: u64, fault: Fault) {
        for ((from, to), proxy) in &self.0 {
            if *from == node || *to == node {
                proxy.set(fault);
            }
        }
    }
}

fn signal(pid: Option<u32>, name: &str) {
    if let Some(pid) = pid {
        let _ = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status();
    }
}

#[tokio::test]
async fn histories_of_creates_compare_and_sets_deletes_and_reads_stay_linearizable_under_kills_pauses_and_partitions()
 {
    let _serial = serial().await;
    let size = env_or("PYLON_CHAOS_NODES", 3);
    let seconds = env_or("PYLON_CHAOS_SECONDS", 25);
    let ports = Cluster::ports(size);
    let mut links = BTreeMap::new();
    for from in 1..=size {
        for to in (1..=size).filter(|to| *to != from) {
            let target = format!("127.0.0.1:{}", ports[to as usize - 1].1);
            let proxy = FaultProxy::start(target.parse().expect("address"))
                .await
                .expect("proxy");
            links.insert((from, to), proxy);
        }
    }
    let links = Links(links);
    let mut cluster =
        Cluster::start_linked(&ports, |from, to| links.0[&(from, to)].address().to_string()).await;
    let endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.endpoint()).collect();

    let history = Arc::new(History {
        origin: Instant::now(),
        operations: Mutex::new(Vec::new()),
    });
    let figures = Arc::new(Figures::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client(
                id,
                endpoints.clone(),
                history.clone(),
                figures.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // The nemesis: one fault at a time, the leader's node half of the time.
    let mut dice = Dice(0x5eed);
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(800 + dice.below(800))).await;
        let leader = cluster.status().await.map(|s| s.leader_id).filter(|id| *id != 0);
        let target = match leader {
            Some(leader) if dice.below(2) == 0 => leader,
            _ => dice.below(size) + 1,
        };
        let hold = Duration::from_millis(1000 + dice.below(1500));
        match dice.below(3) {
            0 => {
                cluster.by_id(target).kill();
                figures.kills.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(hold).await;
                cluster.by_id(target).start().expect("restart");
            }
            1 => {
                let pid = cluster.by_id(target).pid();
                signal(pid, "STOP");
                figures.pauses.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(hold).await;
                signal(pid, "CONT");
            }
            _ => {
                links.isolate(target, Fault::Blackhole);
                figures.partitions.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(hold).await;
                links.isolate(target, Fault::Pass);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    // Healed: a last linearizable read of every key shows no acknowledged write was lost.
    cluster.wait_for_leader().await;
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    for key in 0..KEYS {
        let name = key_name(key);
        let call = Instant::now();
        let outcome = match admin
            .get_api(GetApiRequest {
                name: name.clone(),
                consistency: ReadConsistency::Linearizable as i32,
            })
            .await
        {
            Ok(api) => {
                let api = api.into_inner();
                ReadOutcome::Found {
                    value: api.description.parse().unwrap_or(u64::MAX),
                    revision: api.revision,
                }
            }
            Err(s) if s.code() == Code::NotFound => ReadOutcome::NotFound,
            Err(s) => panic!("final read of {name}: {s}"),
        };
        history.record(u64::MAX, &name, call, Op::Read { outcome });
    }

    let operations = history
        .operations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let started = Instant::now();
    let verdict = check(&operations, CHECK_BUDGET);
    let took = started.elapsed();
    let f = &figures;
    let report = format!(
        "linearizability: {size} nodes, {seconds} s: {} operations ({} acknowledged writes, {} indeterminate); faults: {} kills, {} pauses, {} partitions; checked in {} ms",
        f.operations.load(Ordering::Relaxed),
        f.acknowledged_writes.load(Ordering::Relaxed),
        f.indeterminate.load(Ordering::Relaxed),
        f.kills.load(Ordering::Relaxed),
        f.pauses.load(Ordering::Relaxed),
        f.partitions.load(Ordering::Relaxed),
        took.as_millis()
    );
    eprintln!("{report}");
    match verdict {
        Ok(checked) => eprintln!(
            "linearizability: {} keys, {} operations checked, {} states explored: 0 violations, 0 acknowledged writes lost",
            checked.keys, checked.operations, checked.states_explored
        ),
        Err(e) => panic!("{report}\n{e}"),
    }
    assert!(
        f.operations.load(Ordering::Relaxed) > 200,
        "too few operations to mean anything"
    );
    assert!(
        f.kills.load(Ordering::Relaxed)
            + f.pauses.load(Ordering::Relaxed)
            + f.partitions.load(Ordering::Relaxed)
            >= 3
    );
}
