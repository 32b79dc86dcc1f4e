//! A stage's throttling and quota limits, compiled once per snapshot. Every
//! bucket a request can draw from gets its id here, so the request path
//! formats no strings; ids name what is limited, so nodes that compiled the
//! same snapshot share the same counters. Every id starts with the id of the
//! cluster whose config named the limit: two clusters sharing one Redis
//! never share a counter, whatever their APIs, stages and plans are called.

use foldhash::{HashMap, HashMapExt};
use pylon_proto::config::v1::quota::Period;
use pylon_proto::config::v1::stage::SharedStateFailure;
use pylon_proto::config::v1::{Quota, Stage, ThrottleSettings, UsagePlan};
use std::sync::Arc;

/// One shared counter.
#[derive(Debug, PartialEq)]
pub struct Limit {
    pub id: Arc<str>,
    pub kind: LimitKind,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LimitKind {
    /// A token bucket: `rate` tokens a second, at most `burst` saved up.
    Rate { rate: f64, burst: u32 },
    /// At most `limit` requests per calendar period.
    Quota { limit: u64, period: Period, offset: u32 },
}

impl Limit {
    fn rate(id: String, throttle: &ThrottleSettings) -> Option<Arc<Limit>> {
        (throttle.rate_limit > 0.0).then(|| {
            Arc::new(Limit {
                id: id.into(),
                kind: LimitKind::Rate {
                    rate: throttle.rate_limit,
                    burst: throttle.burst_limit.max(1),
                },
            })
        })
    }

    fn quota(id: String, quota: &Quota) -> Option<Arc<Limit>> {
        (quota.limit > 0).then(|| {
            Arc::new(Limit {
                id: id.into(),
                kind: LimitKind::Quota {
                    limit: quota.limit,
                    period: quota.period(),
                    offset: quota.offset,
                },
            })
        })
    }
}

/// The id of a key's quota counter in cluster `cluster` (the admin API
/// reads it too).
pub fn quota_id(cluster: &str, plan: &str, key_id: &str) -> String {
    format!("{cluster}:q:{plan}:{key_id}")
}

/// The stage's own limits, per route.
#[derive(Debug, Default)]
pub struct StageLimits {
    /// Route key → the route's bucket: the route's override, else the stage
    /// default (which, as in AWS, limits each route on its own).
    routes: HashMap<String, Arc<Limit>>,
    /// What to do while the shared-state backend is unreachable.
    pub fail_closed: bool,
    /// WebSocket stages: new connections (`$connect`) across all nodes.
    pub connect: Option<Arc<Limit>>,
}

impl StageLimits {
    /// The limits of `stage` in cluster `cluster`, for its `route_keys`.
    pub fn compile<K: AsRef<str>>(cluster: &str, stage: &Stage, route_keys: &[K]) -> StageLimits {
        let mut routes = HashMap::new();
        for route_key in route_keys {
            let route_key = route_key.as_ref();
            let throttle = stage.route_throttle.get(route_key).or(stage.throttle.as_ref());
            if let Some(limit) = throttle
                .and_then(|t| Limit::rate(format!("{cluster}:s:{}/{}:{route_key}", stage.api, stage.name), t))
            {
                routes.insert(route_key.to_owned(), limit);
            }
        }
        let connect = stage
            .websocket
            .as_ref()
            .and_then(|ws| ws.connect_throttle)
            .unwrap_or(ThrottleSettings {
                rate_limit: super::websocket::CONNECT_RATE,
                burst_limit: super::websocket::CONNECT_BURST,
            });
        StageLimits {
            routes,
            fail_closed: stage.shared_state_failure() == SharedStateFailure::FailClosed,
            connect: Limit::rate(format!("{cluster}:c:{}/{}", stage.api, stage.name), &connect),
        }
    }

    pub fn route(&self, route_key: &str) -> Option<&Arc<Limit>> {
        self.routes.get(route_key)
    }
}

/// What a usage plan allows one of its keys on one stage.
#[derive(Debug, Default)]
pub struct KeyLimits {
    /// The plan's throttle, for this key across the whole plan.
    pub plan: Option<Arc<Limit>>,
    /// The plan's per-route throttles on this stage, for this key.
    pub routes: HashMap<String, Arc<Limit>>,
    pub quota: Option<Arc<Limit>>,
}

impl KeyLimits {
    /// What `plan` allows `key_id` on `api`'s `stage`, in cluster `cluster`.
    pub fn compile(cluster: &str, plan: &UsagePlan, key_id: &str, api: &str, stage: &str) -> KeyLimits {
        let routes = plan
            .api_stages
            .iter()
            .filter(|s| s.api == api && s.stage == stage)
            .flat_map(|s| &s.route_throttle)
            .filter_map(|(route_key, throttle)| {
                let id = format!("{cluster}:p:{}:{key_id}:{api}/{stage}:{route_key}", plan.name);
                Some((route_key.clone(), Limit::rate(id, throttle)?))
            })
            .collect();
        KeyLimits {
            plan: plan
                .throttle
                .as_ref()
                .and_then(|t| Limit::rate(format!("{cluster}:p:{}:{key_id}", plan.name), t)),
            routes,
            quota: plan
                .quota
                .as_ref()
                .and_then(|q| Limit::quota(quota_id(cluster, &plan.name, key_id), q)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_override_replaces_the_stage_default_for_that_route_only() {
        let stage = Stage {
            api: "pets".into(),
            name: "prod".into(),
            throttle: Some(ThrottleSettings {
                rate_limit: 100.0,
                burst_limit: 50,
            }),
            route_throttle: [(
                "POST /pets".to_owned(),
                ThrottleSettings {
                    rate_limit: 5.0,
                    burst_limit: 0,
                },
            )]
            .into(),
            ..Default::default()
        };
        let limits = StageLimits::compile("3f0a", &stage, &["GET /pets", "POST /pets"]);
        let get = limits.route("GET /pets").map(|l| l.kind);
        assert_eq!(
            get,
            Some(LimitKind::Rate {
                rate: 100.0,
                burst: 50
            })
        );
        let post = limits.route("POST /pets").map(|l| (&*l.id, l.kind));
        assert_eq!(
            post,
            Some((
                "3f0a:s:pets/prod:POST /pets",
                LimitKind::Rate { rate: 5.0, burst: 1 }
            ))
        );
        assert!(!limits.fail_closed);
    }

    #[test]
    fn two_clusters_with_the_same_names_never_share_a_counter() {
        let stage = Stage {
            api: "pets".into(),
            name: "prod".into(),
            throttle: Some(ThrottleSettings {
                rate_limit: 10.0,
                burst_limit: 10,
            }),
            ..Default::default()
        };
        let plan = UsagePlan {
            name: "gold".into(),
            throttle: Some(ThrottleSettings {
                rate_limit: 10.0,
                burst_limit: 10,
            }),
            quota: Some(Quota {
                limit: 100,
                ..Default::default()
            }),
            ..Default::default()
        };
        let ids = |cluster: &str| {
            let stage = StageLimits::compile(cluster, &stage, &["GET /pets"]);
            let key = KeyLimits::compile(cluster, &plan, "k-1", "pets", "prod");
            [
                stage.route("GET /pets").map(|l| l.id.clone()),
                stage.connect.as_ref().map(|l| l.id.clone()),
                key.plan.as_ref().map(|l| l.id.clone()),
                key.quota.as_ref().map(|l| l.id.clone()),
            ]
        };
        let (a, b) = (ids("aaaa"), ids("bbbb"));
        for (a, b) in a.iter().zip(&b) {
            assert!(a.is_some() && a != b, "{a:?} and {b:?}");
        }
        assert_eq!(
            b[3].as_deref(),
            Some(quota_id("bbbb", "gold", "k-1").as_str()),
            "the admin API finds the quota the data planes count"
        );
    }
}
