//! The traffic counts data planes report in their heartbeats and the
//! control plane keeps for the console (`TrafficCounts`): one set of
//! latency buckets for both planes, and how counts add up.

use pylon_proto::publish::v1::TrafficCounts;

/// Upper bounds of the latency buckets, milliseconds (one more bucket
/// holds what is above the last), as the data plane's OpenTelemetry
/// histograms use them.
pub const LATENCY_BOUNDS_MS: [f64; 16] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10_000.0, 29_000.0,
    60_000.0,
];

/// Buckets in a `TrafficCounts.latency_buckets`.
pub const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// The bucket `ms` falls in.
pub fn bucket(ms: f64) -> usize {
    LATENCY_BOUNDS_MS
        .iter()
        .position(|bound| ms <= *bound)
        .unwrap_or(LATENCY_BOUNDS_MS.len())
}

/// Adds `more` into `into` (saturating; `latency_buckets` or
/// `integration_buckets` of another length than [`BUCKETS`] are ignored,
/// so a peer cannot grow them).
pub fn add(into: &mut TrafficCounts, more: &TrafficCounts) {
    into.requests = into.requests.saturating_add(more.requests);
    into.errors_4xx = into.errors_4xx.saturating_add(more.errors_4xx);
    into.errors_5xx = into.errors_5xx.saturating_add(more.errors_5xx);
    into.cache_hits = into.cache_hits.saturating_add(more.cache_hits);
    into.throttled = into.throttled.saturating_add(more.throttled);
    into.integrations = into.integrations.saturating_add(more.integrations);
    if more.latency_ms_sum.is_finite() && more.latency_ms_sum >= 0.0 {
        into.latency_ms_sum += more.latency_ms_sum;
    }
    if more.integration_ms_sum.is_finite() && more.integration_ms_sum >= 0.0 {
        into.integration_ms_sum += more.integration_ms_sum;
    }
    add_buckets(&mut into.latency_buckets, &more.latency_buckets);
    add_buckets(&mut into.integration_buckets, &more.integration_buckets);
}

fn add_buckets(into: &mut Vec<u64>, more: &[u64]) {
    if more.len() == BUCKETS {
        into.resize(BUCKETS, 0);
        for (a, b) in into.iter_mut().zip(more) {
            *a = a.saturating_add(*b);
        }
    }
}

/// Whether `buckets` are absent, or exactly [`BUCKETS`] adding up to `n`.
fn buckets_count(buckets: &[u64], n: u64) -> bool {
    buckets.is_empty()
        || (buckets.len() == BUCKETS && buckets.iter().try_fold(0u64, |a, b| a.checked_add(*b)) == Some(n))
}

/// Route entries a control plane reads from one heartbeat (a data plane
/// with more sends several heartbeats).
pub const MAX_PER_HEARTBEAT: usize = 20_000;

/// The most requests one report may count for one route: a data plane
/// reports every 10 seconds, and a billion requests in that time is not
/// traffic but a lie.
pub const MAX_REPORTED: u64 = 1_000_000_000;

/// Whether `counts` could be real: at most [`MAX_REPORTED`] requests,
/// none of the outcomes above the requests, the latency buckets (when
/// given, exactly [`BUCKETS`]) adding up to the requests, sums finite and
/// not negative.
pub fn plausible(counts: &TrafficCounts) -> bool {
    let n = counts.requests;
    n <= MAX_REPORTED
        && [
            counts.errors_4xx,
            counts.errors_5xx,
            counts.cache_hits,
            counts.throttled,
            counts.integrations,
        ]
        .iter()
        .all(|c| *c <= n)
        && counts.errors_4xx.saturating_add(counts.errors_5xx) <= n
        && buckets_count(&counts.latency_buckets, n)
        && buckets_count(&counts.integration_buckets, counts.integrations)
        && [counts.latency_ms_sum, counts.integration_ms_sum]
            .iter()
            .all(|s| s.is_finite() && *s >= 0.0)
}

/// The latency under which `share` (0–1) of the counted requests fell,
/// as the upper bound of its bucket (`None` without requests; the last
/// bound when it is in the overflow bucket).
pub fn percentile(counts: &TrafficCounts, share: f64) -> Option<f64> {
    bucket_percentile(&counts.latency_buckets, share)
}

/// [`percentile`] of the integration calls' time.
pub fn integration_percentile(counts: &TrafficCounts, share: f64) -> Option<f64> {
    bucket_percentile(&counts.integration_buckets, share)
}

fn bucket_percentile(buckets: &[u64], share: f64) -> Option<f64> {
    let total = buckets.iter().fold(0u64, |a, n| a.saturating_add(*n));
    if total == 0 {
        return None;
    }
    let wanted = (total as f64 * share).ceil().max(1.0) as u64;
    let mut seen = 0u64;
    for (i, n) in buckets.iter().enumerate() {
        seen = seen.saturating_add(*n);
        if seen >= wanted {
            return Some(LATENCY_BOUNDS_MS[i.min(LATENCY_BOUNDS_MS.len() - 1)]);
        }
    }
    LATENCY_BOUNDS_MS.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_percentiles_read_the_buckets() {
        let mut one = TrafficCounts {
            requests: 3,
            latency_buckets: vec![0; BUCKETS],
            ..Default::default()
        };
        for ms in [0.3, 4.0, 400.0] {
            one.latency_buckets[bucket(ms)] += 1;
        }
        let mut total = TrafficCounts::default();
        add(&mut total, &one);
        add(&mut total, &one);
        // A peer's odd-sized buckets are ignored.
        add(
            &mut total,
            &TrafficCounts {
                requests: 1,
                latency_buckets: vec![9; 3],
                ..Default::default()
            },
        );
        assert_eq!(total.requests, 7);
        assert_eq!(total.latency_buckets.iter().sum::<u64>(), 6);
        assert_eq!(percentile(&total, 0.5), Some(5.0));
        assert_eq!(percentile(&total, 0.99), Some(500.0));
        assert_eq!(percentile(&TrafficCounts::default(), 0.5), None);
        assert_eq!(bucket(1e9), BUCKETS - 1);
    }

    #[test]
    fn integration_times_have_their_own_buckets_which_must_add_up() {
        let mut one = TrafficCounts {
            requests: 2,
            integrations: 1,
            latency_buckets: vec![0; BUCKETS],
            integration_buckets: vec![0; BUCKETS],
            ..Default::default()
        };
        one.latency_buckets[bucket(3.0)] += 2;
        one.integration_buckets[bucket(40.0)] += 1;
        assert!(plausible(&one));
        let mut total = TrafficCounts::default();
        add(&mut total, &one);
        assert_eq!(integration_percentile(&total, 0.5), Some(50.0));
        assert_eq!(percentile(&total, 0.5), Some(5.0));
        one.integration_buckets[0] += 1;
        assert!(!plausible(&one), "more integration times than integrations");
    }
}
