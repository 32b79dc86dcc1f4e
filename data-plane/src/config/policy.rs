//! Who may call an API: its resource policy (source CIDRs), its endpoint
//! type, and its CORS rules for browsers.

use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use pylon_proto::config::v1::{Api, Cors, api::EndpointType};
use std::net::IpAddr;
use std::time::Duration;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer, ExposeHeaders};

#[derive(Debug, Default)]
pub struct ApiPolicy {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    /// PRIVATE: served only by private-class nodes, and only to `allow`.
    pub private: bool,
}

impl ApiPolicy {
    pub fn compile(api: &Api) -> Result<ApiPolicy, String> {
        let parse = |list: &[String]| -> Result<Vec<IpNet>, String> {
            list.iter()
                .map(|cidr| {
                    cidr.parse::<IpNet>()
                        .or_else(|_| cidr.parse::<IpAddr>().map(IpNet::from))
                        .map_err(|e| format!("resource_policy: {cidr}: {e}"))
                })
                .collect()
        };
        let policy = api.resource_policy.clone().unwrap_or_default();
        Ok(ApiPolicy {
            allow: parse(&policy.allow_cidrs)?,
            deny: parse(&policy.deny_cidrs)?,
            private: api.endpoint_type() == EndpointType::Private,
        })
    }

    /// Deny wins; a non-empty allow list (always, for PRIVATE APIs) must
    /// contain the source.
    pub fn allows(&self, source: IpAddr) -> bool {
        let source = canonical(source);
        if self.deny.iter().any(|net| net.contains(&source)) {
            return false;
        }
        if self.allow.is_empty() {
            return !self.private;
        }
        self.allow.iter().any(|net| net.contains(&source))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) match IPv4 rules.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The API's CORS rules as a tower-http layer. With credentials allowed,
/// wildcard methods and headers mirror the request instead (the CORS spec
/// forbids `*` with credentials).
pub fn cors_layer(cors: &Cors) -> Result<CorsLayer, String> {
    let header_value = |v: &str| HeaderValue::from_str(v).map_err(|e| format!("cors: {v}: {e}"));
    let header_name = |v: &str| HeaderName::from_bytes(v.as_bytes()).map_err(|e| format!("cors: {v}: {e}"));
    let wildcard = |list: &[String]| list.iter().any(|v| v == "*");
    let origins = if wildcard(&cors.allow_origins) {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            cors.allow_origins
                .iter()
                .map(|o| header_value(o))
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    let methods = match (wildcard(&cors.allow_methods), cors.allow_credentials) {
        (true, false) => AllowMethods::any(),
        (true, true) => AllowMethods::mirror_request(),
        (false, _) => AllowMethods::list(
            cors.allow_methods
                .iter()
                .map(|m| {
                    Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                        .map_err(|e| format!("cors: {m}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let headers = match (wildcard(&cors.allow_headers), cors.allow_credentials) {
        (true, false) => AllowHeaders::any(),
        (true, true) => AllowHeaders::mirror_request(),
        (false, _) => AllowHeaders::list(
            cors.allow_headers
                .iter()
                .map(|h| header_name(h))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let expose = if wildcard(&cors.expose_headers) && !cors.allow_credentials {
        ExposeHeaders::any()
    } else {
        ExposeHeaders::list(
            cors.expose_headers
                .iter()
                .filter(|h| *h != "*")
                .map(|h| header_name(h))
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    let mut layer = CorsLayer::new()
        .allow_origin(origins)
        .allow_methods(methods)
        .allow_headers(headers)
        .expose_headers(expose)
        .allow_credentials(cors.allow_credentials);
    if cors.max_age_seconds > 0 {
        layer = layer.max_age(Duration::from_secs(u64::from(cors.max_age_seconds)));
    }
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pylon_proto::config::v1::ResourcePolicy;

    fn policy(allow: &[&str], deny: &[&str], private: bool) -> ApiPolicy {
        let api = Api {
            endpoint_type: if private { EndpointType::Private as i32 } else { 0 },
            resource_policy: Some(ResourcePolicy {
                allow_cidrs: allow.iter().map(|s| s.to_string()).collect(),
                deny_cidrs: deny.iter().map(|s| s.to_string()).collect(),
            }),
            ..Default::default()
        };
        ApiPolicy::compile(&api).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn deny_wins_and_an_allow_list_must_contain_the_source() {
        let p = policy(&["10.0.0.0/8"], &["10.9.0.0/16"], false);
        assert!(p.allows(ip("10.1.2.3")));
        assert!(!p.allows(ip("10.9.0.1")));
        assert!(!p.allows(ip("192.168.0.1")));
        assert!(p.allows(ip("::ffff:10.1.2.3")));
        assert!(policy(&[], &[], false).allows(ip("203.0.113.9")));
    }

    #[test]
    fn a_private_api_without_an_allow_list_admits_nobody() {
        assert!(!policy(&[], &[], true).allows(ip("127.0.0.1")));
        assert!(policy(&["127.0.0.0/8"], &[], true).allows(ip("127.0.0.1")));
    }
}
