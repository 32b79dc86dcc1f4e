//! Propagation: time from a deploy's admin ACK until every subscriber serves
//! (or holds) the new version — with 2 real data planes polled over HTTP, and
//! with 1,000 simulated subscribers (gRPC streams that ACK each version
//! without compiling it) spread over a 3-node control plane.

use pylon_proto::admin::v1::{
    CreateApiRequest, CreateDeploymentRequest, ListDataPlaneNodesRequest, UpdateApiRequest,
};
use pylon_proto::config::v1::{Api, Integration, MockResponse, Route, integration};
use pylon_proto::publish::v1::config_publisher_client::ConfigPublisherClient;
use pylon_proto::publish::v1::{Ack, Hello, SubscribeRequest, subscribe_request::Kind};
use pylon_tests::gateway::{DataPlaneNode, HttpClient};
use pylon_tests::{Cluster, eventually};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_stream::wrappers::ReceiverStream;

const DEPLOYS: usize = 20;
const SIMULATED: usize = 1000;
const STREAMS_PER_CHANNEL: usize = 50;

fn api(marker: &str) -> Api {
    Api {
        name: "prop".into(),
        routes: vec![Route {
            method: "GET".into(),
            path: "/v".into(),
            integration: Some(Integration {
                r#type: integration::Type::Mock as i32,
                mock: Some(MockResponse {
                    status_code: 200,
                    body: marker.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * (sorted.len().saturating_sub(1)) as f64).round() as usize;
    sorted.get(rank).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Deploys `marker` and returns the config version it created.
async fn deploy(admin: &mut pylon_tests::Admin, marker: &str) -> u64 {
    admin
        .update_api(UpdateApiRequest {
            api: Some(api(marker)),
            expected_revision: 0,
        })
        .await
        .expect("update");
    admin
        .create_deployment(CreateDeploymentRequest {
            api: "prop".into(),
            stage: "prod".into(),
            ..Default::default()
        })
        .await
        .expect("deploy")
        .into_inner()
        .revision
}

pub async fn run() {
    println!(
        "\nPropagation: deploy ACK → every subscriber has the new version; 3 control-plane nodes, {DEPLOYS} deploys"
    );
    let cluster = Cluster::start(3).await;
    let endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.endpoint()).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let dp1 = DataPlaneNode::start(dir.path(), "dp-1", &endpoints, &[]);
    let reversed: Vec<String> = endpoints.iter().rev().cloned().collect();
    let dp2 = DataPlaneNode::start(dir.path(), "dp-2", &reversed, &[]);
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    admin
        .create_api(CreateApiRequest {
            api: Some(api("m-0")),
        })
        .await
        .expect("create");
    deploy(&mut admin, "m-0").await;
    let http = HttpClient::default();
    let serves = |node: std::net::SocketAddr, marker: String| {
        let http = http.clone();
        async move {
            http.get(node, "prop.localhost", "/prod/v")
                .await
                .is_ok_and(|r| r.status == 200 && r.body == marker)
        }
    };
    eventually("data planes serve", Duration::from_secs(20), || async {
        (serves(dp1.address(), "m-0".into()).await && serves(dp2.address(), "m-0".into()).await).then_some(())
    })
    .await;

    // 2 real data planes, polled over HTTP.
    let mut real = Vec::new();
    for i in 1..=DEPLOYS {
        let marker = format!("m-{i}");
        deploy(&mut admin, &marker).await;
        let acked = Instant::now();
        let mut pending = vec![dp1.address(), dp2.address()];
        while !pending.is_empty() && acked.elapsed() < Duration::from_secs(10) {
            let mut still = Vec::new();
            for node in pending {
                if !serves(node, marker.clone()).await {
                    still.push(node);
                }
            }
            pending = still;
        }
        real.push(acked.elapsed());
    }
    println!(
        "  2 data planes (HTTP poll): p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        ms(percentile(&real, 50.0)),
        ms(percentile(&real, 99.0)),
        ms(real.iter().max().copied().unwrap_or_default())
    );

    // 1,000 simulated subscribers.
    let versions: Arc<Vec<AtomicU64>> = Arc::new((0..SIMULATED).map(|_| AtomicU64::new(0)).collect());
    let received_at: Arc<Vec<std::sync::Mutex<Option<Instant>>>> =
        Arc::new((0..SIMULATED).map(|_| std::sync::Mutex::new(None)).collect());
    let mut tasks = Vec::new();
    for group in 0..SIMULATED / STREAMS_PER_CHANNEL {
        let endpoint = endpoints[group % endpoints.len()].clone();
        let channel = tonic::transport::Endpoint::from_shared(endpoint)
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        for k in 0..STREAMS_PER_CHANNEL {
            let index = group * STREAMS_PER_CHANNEL + k;
            let channel = channel.clone();
            let (versions, received_at) = (versions.clone(), received_at.clone());
            tasks.push(tokio::spawn(async move {
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                let _ = tx
                    .send(SubscribeRequest {
                        kind: Some(Kind::Hello(Hello {
                            node_id: format!("sim-{index}"),
                            ..Default::default()
                        })),
                    })
                    .await;
                let mut client = ConfigPublisherClient::new(channel).max_decoding_message_size(256 << 20);
                let Ok(response) = client.subscribe(ReceiverStream::new(rx)).await else {
                    return;
                };
                let mut updates = response.into_inner();
                while let Ok(Some(update)) = updates.message().await {
                    versions[index].store(update.version, Ordering::Release);
                    if let Ok(mut at) = received_at[index].lock() {
                        *at = Some(Instant::now());
                    }
                    let _ = tx
                        .send(SubscribeRequest {
                            kind: Some(Kind::Ack(Ack {
                                version: update.version,
                                cluster_id: update.cluster_id.clone(),
                                warning: String::new(),
                            })),
                        })
                        .await;
                }
            }));
        }
    }
    eventually("1,000 subscribers connected", Duration::from_secs(60), || async {
        let count = versions.iter().filter(|v| v.load(Ordering::Acquire) > 0).count();
        (count == SIMULATED).then_some(())
    })
    .await;
    let listed = admin
        .list_data_plane_nodes(ListDataPlaneNodesRequest::default())
        .await
        .map(|r| r.into_inner().nodes.len())
        .unwrap_or(0);
    let mut all = Vec::new();
    let mut each = Vec::new();
    for i in 1..=DEPLOYS {
        let version = deploy(&mut admin, &format!("s-{i}")).await;
        let acked = Instant::now();
        while acked.elapsed() < Duration::from_secs(30)
            && versions.iter().any(|v| v.load(Ordering::Acquire) < version)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        all.push(acked.elapsed());
        for at in received_at.iter() {
            if let Ok(at) = at.lock()
                && let Some(at) = *at
            {
                each.push(at.saturating_duration_since(acked));
            }
        }
    }
    println!(
        "  {SIMULATED} simulated subscribers ({listed} nodes listed): last one p50 {:.1} ms  p99 {:.1} ms; per subscriber p50 {:.1} ms  p99 {:.1} ms",
        ms(percentile(&all, 50.0)),
        ms(percentile(&all, 99.0)),
        ms(percentile(&each, 50.0)),
        ms(percentile(&each, 99.0)),
    );
    for task in tasks {
        task.abort();
    }
    drop((dp1, dp2));
}
