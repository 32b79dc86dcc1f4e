//! Who is calling, and may they: the client's address (through trusted
//! proxies' `X-Forwarded-For`) checked against the API's resource policy.

use crate::config::policy::{ApiPolicy, canonical};
use crate::error::GatewayError;
use http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

/// The client's address. When the connection comes from a trusted proxy,
/// `X-Forwarded-For` is read right to left and the first address that is
/// not a trusted proxy is the client; otherwise the peer itself is.
pub fn source_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| hop.trim().parse::<IpAddr>().map(canonical))
        .collect::<Result<_, _>>()
        // A hop that is not an address: nothing before it can be trusted.
        .unwrap_or_default();
    let mut client = peer;
    for hop in hops.iter().rev() {
        client = *hop;
        if !is_trusted(hop) {
            break;
        }
    }
    client
}

pub fn check(policy: &ApiPolicy, source: IpAddr) -> Result<(), GatewayError> {
    if policy.allows(source) {
        Ok(())
    } else {
        Err(GatewayError::AccessDenied { source_ip: source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = xff.parse() {
            h.insert("x-forwarded-for", v);
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"))];
        // An untrusted peer cannot claim another address.
        assert_eq!(
            source_ip(ip("203.0.113.5"), &headers("1.2.3.4"), &trusted),
            ip("203.0.113.5")
        );
        // Through one trusted proxy: the address it saw.
        assert_eq!(
            source_ip(ip("10.0.0.2"), &headers("198.51.100.7"), &trusted),
            ip("198.51.100.7")
        );
        // A client-forged first hop is ignored: the right-most untrusted hop wins.
        assert_eq!(
            source_ip(
                ip("10.0.0.2"),
                &headers("6.6.6.6, 198.51.100.7, 10.0.0.9"),
                &trusted
            ),
            ip("198.51.100.7")
        );
        // Garbage in the header: the proxy itself is the best we know.
        assert_eq!(
            source_ip(ip("10.0.0.2"), &headers("not-an-ip"), &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            source_ip(ip("10.0.0.2"), &HeaderMap::new(), &trusted),
            ip("10.0.0.2")
        );
    }
}
