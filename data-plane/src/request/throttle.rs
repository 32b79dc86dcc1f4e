//! Throttling and quotas, after authentication (the key must be known)
//! and before the body is read. The limits that apply, in AWS's order:
//! the usage plan's throttle for the key, its per-route throttle, the
//! quota; the stage's throttle for the route; the node-wide account limit.
//! All of them admit the request or it takes nothing from any
//! ([`crate::shared`]).

use crate::config::limits::Limit;
use crate::config::{CompiledStage, StageKey};
use crate::error::GatewayError;
use crate::shared::{Decision, SharedState};
use smallvec::SmallVec;
use std::sync::Arc;

pub async fn check(
    shared: &SharedState,
    stage: &CompiledStage,
    route_key: &str,
    key: Option<&StageKey>,
) -> Result<(), GatewayError> {
    let mut limits: SmallVec<[&Arc<Limit>; 5]> = SmallVec::new();
    if let Some(key) = key {
        limits.extend(key.limits.plan.as_ref());
        limits.extend(key.limits.routes.get(route_key));
        limits.extend(key.limits.quota.as_ref());
    }
    limits.extend(stage.limits.route(route_key));
    if route_key == "$connect" {
        // A new WebSocket connection: the stage's connection rate too.
        limits.extend(stage.limits.connect.as_ref());
    }
    match shared.decide(&limits, stage.limits.fail_closed).await {
        Ok(Decision::Admit) => Ok(()),
        Ok(Decision::Throttled { retry_after }) => Err(GatewayError::Throttled { retry_after }),
        Ok(Decision::QuotaExceeded { retry_after }) => Err(GatewayError::QuotaExceeded { retry_after }),
        Err(unavailable) => Err(GatewayError::LimitsUnavailable(unavailable.0)),
    }
}
