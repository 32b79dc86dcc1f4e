//! Which data planes the other control-plane nodes know of: each node keeps
//! its own [`Registry`] (the streams it serves), serves it
//! to its peers on the Raft port (`DataPlaneDirectory`, peer credential),
//! and asks theirs for `ListDataPlaneNodes`.

use super::Registry;
use crate::raft::transport::Transport;
use pylon_proto::publish::v1::data_plane_directory_client::DataPlaneDirectoryClient;
use pylon_proto::publish::v1::data_plane_directory_server::DataPlaneDirectory;
use pylon_proto::publish::v1::{
    DataPlaneNode, DataPlaneNodeList, DataPlaneNodesRequest, StageTraffic, StageTrafficRequest,
};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The `DataPlaneDirectory` gRPC service: this node's registry.
pub struct DirectoryService {
    pub registry: Arc<Registry>,
}

#[tonic::async_trait]
impl DataPlaneDirectory for DirectoryService {
    async fn data_plane_nodes(
        &self,
        _request: Request<DataPlaneNodesRequest>,
    ) -> Result<Response<DataPlaneNodeList>, Status> {
        Ok(Response::new(DataPlaneNodeList {
            nodes: self.registry.list(),
        }))
    }

    async fn stage_traffic(
        &self,
        request: Request<StageTrafficRequest>,
    ) -> Result<Response<StageTraffic>, Status> {
        let request = request.into_inner();
        Ok(Response::new(self.registry.traffic.stage(
            &request.api,
            &request.stage,
            unix_now(),
        )))
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `api`'s `stage` as every reachable node's data planes reported it, the
/// `top` most requested routes kept (a peer that does not answer is left
/// out, and logged).
pub async fn stage_traffic_everywhere(
    registry: &Registry,
    transport: &Transport,
    own_id: u64,
    api: &str,
    stage: &str,
    top: usize,
) -> StageTraffic {
    let mut views = vec![registry.traffic.stage(api, stage, unix_now())];
    let peers = transport.addresses().into_iter().filter(|(id, _)| *id != own_id);
    let answers = futures::future::join_all(peers.map(|(id, address)| async move {
        let asked = async {
            let channel = transport.peer_channel(&address).await?;
            let request = StageTrafficRequest {
                api: api.to_owned(),
                stage: stage.to_owned(),
            };
            DataPlaneDirectoryClient::new(channel)
                .stage_traffic(transport.authorized(request))
                .await
                .map(Response::into_inner)
                .map_err(|status| status.message().to_owned())
        };
        (id, asked.await)
    }))
    .await;
    for (id, answer) in answers {
        match answer {
            Ok(view) => views.push(view),
            Err(e) => tracing::debug!(peer = id, error = %e, "peer did not give its stage traffic"),
        }
    }
    super::traffic::merge(views, top)
}

/// Every data plane this node and its reachable peers know of, merged by
/// node id (a peer that does not answer in time is left out, and logged).
pub async fn everywhere(registry: &Registry, transport: &Transport, own_id: u64) -> Vec<DataPlaneNode> {
    let mut nodes = registry.list();
    let peers = transport.addresses().into_iter().filter(|(id, _)| *id != own_id);
    let answers = futures::future::join_all(peers.map(|(id, address)| async move {
        let asked = async {
            let channel = transport.peer_channel(&address).await?;
            DataPlaneDirectoryClient::new(channel)
                .data_plane_nodes(transport.authorized(DataPlaneNodesRequest {}))
                .await
                .map(Response::into_inner)
                .map_err(|status| status.message().to_owned())
        };
        (id, asked.await)
    }))
    .await;
    for (id, answer) in answers {
        match answer {
            Ok(list) => nodes.extend(list.nodes),
            Err(e) => tracing::debug!(peer = id, error = %e, "peer did not list its data planes"),
        }
    }
    super::registry::merge(nodes)
}
