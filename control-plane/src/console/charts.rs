//! A stage's last hour of traffic (`GetStageMetrics`) as what the stage
//! page draws: totals, SVG polylines (numbers only: the template escapes
//! them like any value, and the CSP allows no script or inline style), and
//! the most requested routes.

use minijinja::{Value, context};
use pylon_common::traffic::{BUCKETS, add, integration_percentile, percentile};
use pylon_proto::publish::v1::{StageTraffic, TrafficCounts};

/// Slots in the hour drawn, and the drawing's size.
const SLOTS: i64 = 360;
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 120.0;

/// One series as `x,y` points over the hour (slot `i` at `2i`), scaled to `max`.
fn points(values: &[f64], max: f64) -> String {
    let scale = if max > 0.0 { (HEIGHT - 4.0) / max } else { 0.0 };
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.0},{:.1}",
                i as f64 * WIDTH / SLOTS as f64,
                HEIGHT - 2.0 - v * scale
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn chart(title: &str, unit: &str, lines: Vec<(&str, &str, Vec<f64>)>) -> Value {
    let max = lines
        .iter()
        .flat_map(|(_, _, values)| values.iter().copied())
        .fold(0.0_f64, f64::max);
    let drawn: Vec<Value> = lines
        .iter()
        .map(|(name, class, values)| context! { name => *name, class => *class, points => points(values, max) })
        .collect();
    let max = if max < 10.0 {
        format!("{max:.1}")
    } else {
        format!("{max:.0}")
    };
    context! { title, unit, max, lines => drawn }
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v}"))
}

/// What the stage page shows of `traffic` for the hour ending `now`.
pub fn stage_traffic(traffic: &StageTraffic, now: i64) -> Value {
    let last = now - now.rem_euclid(10);
    let first = last - (SLOTS - 1) * 10;
    let mut per_slot = vec![TrafficCounts::default(); SLOTS as usize];
    let mut total = TrafficCounts {
        latency_buckets: vec![0; BUCKETS],
        ..Default::default()
    };
    for slot in &traffic.slots {
        let Some(counts) = &slot.counts else { continue };
        if (first..=last).contains(&slot.start) {
            let i = ((slot.start - first) / 10) as usize;
            if let Some(into) = per_slot.get_mut(i) {
                *into = counts.clone();
            }
        }
        add(&mut total, counts);
    }
    let series = |f: &dyn Fn(&TrafficCounts) -> f64| per_slot.iter().map(f).collect::<Vec<f64>>();
    let charts = vec![
        chart(
            "Requests per 10 s",
            "requests",
            vec![
                ("requests", "requests", series(&|c| c.requests as f64)),
                ("4xx", "errors-4xx", series(&|c| c.errors_4xx as f64)),
                ("5xx", "errors-5xx", series(&|c| c.errors_5xx as f64)),
            ],
        ),
        chart(
            "Latency",
            "ms",
            vec![
                ("p50", "p50", series(&|c| percentile(c, 0.5).unwrap_or(0.0))),
                ("p99", "p99", series(&|c| percentile(c, 0.99).unwrap_or(0.0))),
                (
                    "integration p50",
                    "integration-p50",
                    series(&|c| integration_percentile(c, 0.5).unwrap_or(0.0)),
                ),
                (
                    "integration p99",
                    "integration-p99",
                    series(&|c| integration_percentile(c, 0.99).unwrap_or(0.0)),
                ),
            ],
        ),
        chart(
            "Cache hits and throttled requests per 10 s",
            "requests",
            vec![
                ("cache hits", "hits", series(&|c| c.cache_hits as f64)),
                ("throttled", "throttled", series(&|c| c.throttled as f64)),
            ],
        ),
    ];
    let routes: Vec<Value> = traffic
        .routes
        .iter()
        .map(|r| {
            let average = if r.requests > 0 {
                format!("{:.1}", r.latency_ms_sum / r.requests as f64)
            } else {
                "–".to_owned()
            };
            let route = if r.route_key.is_empty() { "(no route matched)" } else { r.route_key.as_str() };
            context! { route, requests => r.requests, errors_4xx => r.errors_4xx, errors_5xx => r.errors_5xx, average }
        })
        .collect();
    let integration = if total.integrations > 0 {
        format!("{:.1}", total.integration_ms_sum / total.integrations as f64)
    } else {
        "–".to_owned()
    };
    context! {
        requests => total.requests,
        errors_4xx => total.errors_4xx,
        errors_5xx => total.errors_5xx,
        cache_hits => total.cache_hits,
        throttled => total.throttled,
        p50 => ms(percentile(&total, 0.5)),
        p99 => ms(percentile(&total, 0.99)),
        integration,
        integration_p50 => ms(integration_percentile(&total, 0.5)),
        integration_p99 => ms(integration_percentile(&total, 0.99)),
        charts,
        routes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pylon_proto::publish::v1::{RouteTotal, TrafficSlot};

    #[test]
    fn an_hour_of_slots_becomes_totals_and_points_in_the_frame() {
        let now = 1_000_005;
        let traffic = StageTraffic {
            slots: vec![TrafficSlot {
                start: 1_000_000,
                counts: Some(TrafficCounts {
                    requests: 8,
                    errors_5xx: 2,
                    latency_buckets: {
                        let mut b = vec![0; BUCKETS];
                        b[3] = 8;
                        b
                    },
                    ..Default::default()
                }),
            }],
            routes: vec![RouteTotal {
                route_key: String::new(),
                requests: 8,
                latency_ms_sum: 20.0,
                ..Default::default()
            }],
            latency_bounds_ms: Vec::new(),
        };
        let shown = stage_traffic(&traffic, now);
        assert_eq!(
            shown.get_attr("requests").ok().map(|v| v.to_string()),
            Some("8".into())
        );
        assert_eq!(
            shown.get_attr("p99").ok().map(|v| v.to_string()),
            Some("5".into())
        );
        let charts = shown.get_attr("charts").expect("charts");
        let first = charts.get_item(&Value::from(0)).expect("chart");
        let lines = first.get_attr("lines").expect("lines");
        let requests = lines
            .get_item(&Value::from(0))
            .expect("line")
            .get_attr("points")
            .expect("points")
            .to_string();
        // The last slot is the current one, at the right edge, at the top.
        assert!(requests.ends_with("718,2.0"), "{requests}");
        assert_eq!(requests.split(' ').count(), 360);
    }
}
