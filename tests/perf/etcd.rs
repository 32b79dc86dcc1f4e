//! A 3-node etcd on loopback (Debian's `etcd` binary) and a minimal gRPC client
//! for `etcdserverpb.KV/Put`, so both systems see the same load shape.

use pylon_tests::free_port;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {}

pub struct Cluster {
    children: Vec<Child>,
    channels: Vec<Channel>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn etcd_binary() -> Option<&'static str> {
    ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

impl Cluster {
    pub async fn start(size: usize) -> Option<Cluster> {
        let binary = etcd_binary()?;
        let dir = tempfile::tempdir().ok()?;
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("n{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut children = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let log = std::fs::File::create(dir.path().join(format!("n{i}.log"))).ok()?;
            let child = Command::new(binary)
                .arg(format!("--name=n{i}"))
                .arg(format!(
                    "--data-dir={}",
                    dir.path().join(format!("n{i}")).display()
                ))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!("--initial-cluster={}", initial.join(",")))
                .arg("--initial-cluster-state=new")
                .arg("--initial-cluster-token=pylon-bench")
                .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .ok()?;
            children.push(child);
        }
        let mut channels = Vec::new();
        for (client, _) in &ports {
            let endpoint =
                tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{client}")).ok()?;
            let mut channel = None;
            for _ in 0..100 {
                if let Ok(c) = endpoint.connect().await {
                    channel = Some(c);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            channels.push(channel?);
        }
        let cluster = Cluster {
            children,
            channels,
            _dir: dir,
        };
        // Wait for a leader: the first put succeeds once there is one.
        for _ in 0..100 {
            if cluster.put(0, b"ready".to_vec(), b"1".to_vec()).await {
                return Some(cluster);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    async fn put(&self, client: usize, key: Vec<u8>, value: Vec<u8>) -> bool {
        let channel = self.channels[client % self.channels.len()].clone();
        put(channel, key, value).await
    }

    pub async fn round(&self, round: usize) -> super::Outcome {
        let channels: Arc<Vec<Channel>> = Arc::new(self.channels.clone());
        let pids: Vec<u32> = self.children.iter().map(Child::id).collect();
        super::load(&pids, move |client, n| {
            let channel = channels[client % channels.len()].clone();
            async move {
                let value = vec![b'x'; 300];
                put(channel, format!("/apis/r{round}-{n}").into_bytes(), value).await
            }
        })
        .await
    }
}

async fn put(channel: Channel, key: Vec<u8>, value: Vec<u8>) -> bool {
    let mut grpc = tonic::client::Grpc::new(channel);
    if grpc.ready().await.is_err() {
        return false;
    }
    let path = http::uri::PathAndQuery::from_static("/etcdserverpb.KV/Put");
    let codec: tonic_prost::ProstCodec<PutRequest, PutResponse> = tonic_prost::ProstCodec::default();
    grpc.unary(tonic::Request::new(PutRequest { key, value }), path, codec)
        .await
        .is_ok()
}
