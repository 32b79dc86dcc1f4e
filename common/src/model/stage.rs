//! Validation of a [`Stage`]: variables, throttle, cache and canary settings.

use super::{Checker, ValidationErrors, at, is_dns_label, is_name, key};
use pylon_proto::config::v1::{Stage, ThrottleSettings, WebSocketSettings};
use std::collections::BTreeMap;

const MAX_VARIABLES: usize = 100;

/// A stage that passed validation. Whether its deployments exist is checked by
/// the state machine, which knows them.
#[derive(Clone, Debug, PartialEq)]
pub struct StageConfig {
    stage: Stage,
}

impl StageConfig {
    /// Checks a stage as stored: what every node accepts in a snapshot.
    ///
    /// # Errors
    /// Every field that breaks a rule, with its path (`variables["name"]`,
    /// `canary.percent_traffic` …).
    pub fn validate(stage: Stage) -> Result<StageConfig, ValidationErrors> {
        let mut c = Checker::default();
        check_stage(&mut c, &stage);
        c.finish(StageConfig { stage })
    }

    /// Checks a stage being written (created, updated, put in a batch):
    /// [`StageConfig::validate`] plus the rules added after stages were
    /// first stored. Those are not checked on snapshots, so a stage stored
    /// before them still reaches every node; it must meet them when it is
    /// next written.
    ///
    /// Added rules: stage variable values (and canary overrides) hold no
    /// control characters (U+0000–U+001F, U+007F). They end up in header
    /// values and URIs, where CR and LF would fail the requests at run time.
    ///
    /// # Errors
    /// As [`StageConfig::validate`], with the added rules' field paths.
    pub fn validate_write(stage: Stage) -> Result<StageConfig, ValidationErrors> {
        let mut c = Checker::default();
        check_stage(&mut c, &stage);
        check_printable(&mut c, "variables", &stage.variables);
        if let Some(canary) = &stage.canary {
            check_printable(
                &mut c,
                "canary.stage_variable_overrides",
                &canary.stage_variable_overrides,
            );
        }
        c.finish(StageConfig { stage })
    }

    pub fn as_proto(&self) -> &Stage {
        &self.stage
    }

    pub fn into_proto(self) -> Stage {
        self.stage
    }
}

/// The rules of a stored stage ([`StageConfig::validate`]).
fn check_stage(c: &mut Checker, stage: &Stage) {
    c.check(is_dns_label(&stage.api), "api", "must name an API (a DNS label)");
    c.check(
        is_name(&stage.name, 128, b"_-"),
        "name",
        "must be 1-128 chars of A-Z a-z 0-9 _ -",
    );
    c.check(
        stage.description.len() <= 1024,
        "description",
        "must be at most 1024 characters",
    );
    if let Some(publication) = &stage.publication {
        c.check(
            !publication.published || !publication.usage_plan.is_empty(),
            "publication.usage_plan",
            "required when published: the usage plan whose keys the portal gives out",
        );
        c.check(
            publication.published || publication.usage_plan.is_empty(),
            "publication.usage_plan",
            "only a published stage offers a plan (set published: true, or leave it out)",
        );
    }
    check_variables(c, "variables", &stage.variables);
    if let Some(throttle) = &stage.throttle {
        check_throttle(c, "throttle", throttle);
    }
    check_route_throttle(c, "route_throttle", &stage.route_throttle);
    if let Some(cache) = &stage.cache {
        if let Some(ttl) = cache.ttl_seconds {
            c.check(ttl <= 3600, "cache.ttl_seconds", "must be 0..=3600");
        }
        c.check(
            !cache.enabled || cache.capacity_bytes == 0 || cache.capacity_bytes >= 1 << 20,
            "cache.capacity_bytes",
            "must be at least 1048576 (1 MiB) when set",
        );
    }
    if let Some(canary) = &stage.canary {
        c.check(
            !canary.deployment_id.is_empty(),
            "canary.deployment_id",
            "required when a canary is set",
        );
        c.check(
            canary.percent_traffic.is_finite() && (0.0..=100.0).contains(&canary.percent_traffic),
            "canary.percent_traffic",
            "must be 0.0..=100.0",
        );
        check_variables(
            c,
            "canary.stage_variable_overrides",
            &canary.stage_variable_overrides,
        );
        if !canary.sticky_key.is_empty() {
            let ok = canary.sticky_key == "$context.identity.sourceIp"
                || ["$request.header.", "$request.querystring.", "$request.cookie."]
                    .iter()
                    .any(|p| canary.sticky_key.strip_prefix(p).is_some_and(|n| !n.is_empty()));
            c.check(
                    ok,
                    "canary.sticky_key",
                    "must be $request.header.NAME, $request.querystring.NAME, $request.cookie.NAME or $context.identity.sourceIp",
                );
        }
    }
    c.check(
        stage.tracing_sampling_ratio.is_finite() && (0.0..=1.0).contains(&stage.tracing_sampling_ratio),
        "tracing_sampling_ratio",
        "must be 0.0..=1.0 (0: the node's default)",
    );
    if let Some(websocket) = &stage.websocket {
        check_websocket(c, websocket);
    }
    c.check(
        stage.access_log_format.len() <= 4096,
        "access_log_format",
        "must be at most 4096 characters",
    );
}

/// Variable values without control characters (see
/// [`StageConfig::validate_write`]).
fn check_printable(c: &mut Checker, p: &str, variables: &BTreeMap<String, String>) {
    for (name, value) in variables {
        c.check(
            !value.chars().any(|ch| ch.is_ascii_control()),
            key(p, name),
            "values hold no control characters (CR, LF, tab …)",
        );
    }
}

/// A WebSocket stage's limits (0 keeps the default).
fn check_websocket(c: &mut Checker, ws: &WebSocketSettings) {
    let within = |value: u32, low: u32, high: u32| value == 0 || (low..=high).contains(&value);
    c.check(
        within(ws.max_frame_bytes, 1024, 1 << 20),
        "websocket.max_frame_bytes",
        "must be 1024..=1048576 (0: 32768)",
    );
    c.check(
        within(ws.max_message_bytes, 1024, 16 << 20),
        "websocket.max_message_bytes",
        "must be 1024..=16777216 (0: 131072)",
    );
    c.check(
        within(ws.idle_timeout_seconds, 1, 7200),
        "websocket.idle_timeout_seconds",
        "must be 1..=7200 (0: 600)",
    );
    c.check(
        within(ws.max_duration_seconds, 1, 86_400),
        "websocket.max_duration_seconds",
        "must be 1..=86400 (0: 7200)",
    );
    if let Some(throttle) = &ws.connect_throttle {
        check_throttle(c, "websocket.connect_throttle", throttle);
    }
}

/// Stage variables as AWS limits them: ≤ 100, names ≤ 64 of A-Z a-z 0-9 _, values ≤ 512.
fn check_variables(c: &mut Checker, p: &str, variables: &BTreeMap<String, String>) {
    c.check(
        variables.len() <= MAX_VARIABLES,
        p,
        format!("at most {MAX_VARIABLES} variables"),
    );
    for (name, value) in variables {
        c.check(
            is_name(name, 64, b"_"),
            key(p, name),
            "names are 1-64 chars of A-Z a-z 0-9 _",
        );
        c.check(
            value.len() <= 512,
            key(p, name),
            "values are at most 512 characters",
        );
    }
}

pub(crate) fn check_throttle(c: &mut Checker, p: &str, throttle: &ThrottleSettings) {
    c.check(
        throttle.rate_limit.is_finite()
            && (throttle.rate_limit == 0.0 || (0.001..=1e9).contains(&throttle.rate_limit)),
        at(p, "rate_limit"),
        "must be 0 (unset) or 0.001..=1e9 requests per second",
    );
    c.check(
        throttle.rate_limit == 0.0 || throttle.burst_limit > 0,
        at(p, "burst_limit"),
        "must be at least 1 when a rate is set",
    );
}

pub(crate) fn check_route_throttle(c: &mut Checker, p: &str, routes: &BTreeMap<String, ThrottleSettings>) {
    for (route_key, throttle) in routes {
        let http = route_key
            .split_once(' ')
            .is_some_and(|(method, path)| !method.is_empty() && path.starts_with('/'));
        // A WebSocket API's route key: a name, or $connect / $default / $disconnect.
        let websocket = !route_key.is_empty()
            && route_key.len() <= 128
            && !route_key.contains([' ', '/'])
            && (!route_key.starts_with('$')
                || ["$connect", "$disconnect", "$default"].contains(&route_key.as_str()));
        c.check(
            http || websocket,
            key(p, route_key),
            "keys are route keys like \"GET /pets/{id}\" (or a WebSocket route key like \"sendmessage\")",
        );
        check_throttle(c, &key(p, route_key), throttle);
    }
}
