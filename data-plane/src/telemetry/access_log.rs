//! Access logs: one line per request of an API stage, in the stage's
//! `access_log_format` (AWS style: text with `$context.*` variables) or, by
//! default, a JSON object. Lines go to stdout through a bounded queue and a
//! writer thread (a slow terminal or pipe never holds a request; what does
//! not fit is dropped and counted) and/or out as OTLP log records.

use super::Record;
use opentelemetry::logs::{AnyValue, LogRecord, Logger, Severity};
use opentelemetry::trace::TraceContextExt;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

/// Lines waiting for the stdout writer at most.
const QUEUE: usize = 8192;

pub struct AccessLog {
    stdout: Option<SyncSender<String>>,
    otlp: Option<opentelemetry_sdk::logs::SdkLogger>,
    pub dropped: AtomicU64,
}

impl AccessLog {
    pub fn start(stdout: bool, otlp: Option<opentelemetry_sdk::logs::SdkLogger>) -> AccessLog {
        let stdout = stdout.then(|| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<String>(QUEUE);
            let spawned = std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || {
                    let out = std::io::stdout();
                    let mut out = std::io::BufWriter::new(out.lock());
                    while let Ok(line) = rx.recv() {
                        let _ = writeln!(out, "{line}");
                        // Flush when the queue is empty: batches under load,
                        // prompt when idle.
                        while let Ok(line) = rx.try_recv() {
                            let _ = writeln!(out, "{line}");
                        }
                        let _ = out.flush();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the access-log writer; access logs to stdout are off");
            }
            tx
        });
        AccessLog {
            stdout,
            otlp,
            dropped: AtomicU64::new(0),
        }
    }

    pub fn is_on(&self) -> bool {
        self.stdout.is_some() || self.otlp.is_some()
    }

    /// Writes the request's line; `trace` links an OTLP record to its span.
    pub fn write(
        &self,
        format: Option<&str>,
        record: &Record,
        trace: Option<&opentelemetry::Context>,
    ) -> bool {
        if !self.is_on() {
            return true;
        }
        let line = render(format, record);
        if let Some(logger) = &self.otlp {
            let mut log = logger.create_log_record();
            log.set_severity_number(Severity::Info);
            log.set_severity_text("INFO");
            log.set_event_name("pylon.access");
            log.add_attribute("pylon.api", record.api.clone());
            log.add_attribute("pylon.stage", record.stage.clone());
            log.add_attribute("http.response.status_code", i64::from(record.status));
            if let Some(cx) = trace {
                let context = cx.span().span_context().clone();
                log.set_trace_context(context.trace_id(), context.span_id(), Some(context.trace_flags()));
            }
            log.set_body(AnyValue::from(line.clone()));
            logger.emit(log);
        }
        if let Some(tx) = &self.stdout {
            match tx.try_send(line) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
            }
        }
        true
    }
}

/// The line for `record`: `format` with its `$context.*` variables filled,
/// or the default JSON object. In a format that is a JSON object (starts
/// with `{`) values are JSON-escaped.
pub fn render(format: Option<&str>, record: &Record) -> String {
    let Some(format) = format.filter(|f| !f.trim().is_empty()) else {
        return default_line(record);
    };
    let json = format.trim_start().starts_with('{');
    let mut out = String::with_capacity(format.len() + 64);
    let mut rest = format;
    while let Some(at) = rest.find("$context.") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "$context.".len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
            .unwrap_or(after.len());
        let name = after[..end].trim_end_matches('.');
        match variable(record, name) {
            Some(value) if json => {
                let quoted = serde_json::Value::String(value).to_string();
                out.push_str(&quoted[1..quoted.len() - 1]);
            }
            Some(value) => out.push_str(&value),
            None => out.push('-'),
        }
        rest = &after[name.len()..];
    }
    out.push_str(rest);
    out
}

/// `$context.NAME` as AWS names it ("-" when unknown).
fn variable(record: &Record, name: &str) -> Option<String> {
    let opt = |v: &Option<String>| v.clone();
    Some(match name {
        "requestId" | "extendedRequestId" => record.request_id.clone(),
        "apiId" => record.api.clone(),
        "stage" => record.stage.clone(),
        "deploymentId" => record.deployment.clone(),
        "domainName" => record.domain.clone(),
        "identity.sourceIp" => record.source_ip.clone(),
        "identity.userAgent" => record.user_agent.clone(),
        "identity.apiKeyId" => return opt(&record.api_key_id),
        "authorizer.principalId" => return opt(&record.principal_id),
        "httpMethod" => record.method.clone(),
        "path" => record.path.clone(),
        "protocol" => record.protocol.clone(),
        "resourcePath" => record.resource_path().to_owned(),
        "routeKey" => return opt(&record.route_key),
        "status" => record.status.to_string(),
        "responseLength" => return record.response_length.map(|n| n.to_string()),
        "requestTime" => return record.started.map(clf_time),
        "requestTimeEpoch" => {
            return record
                .started
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis().to_string());
        }
        "integrationLatency" | "integration.latency" => {
            return record.integration_latency.map(|d| d.as_millis().to_string());
        }
        "responseLatency" => record.latency.as_millis().to_string(),
        "error.message" => return opt(&record.error_message),
        "error.responseType" => return record.error_type.map(str::to_owned),
        "cacheStatus" => return record.cache.map(str::to_owned),
        _ => return None,
    })
}

fn default_line(record: &Record) -> String {
    serde_json::json!({
        "requestId": record.request_id,
        "ip": record.source_ip,
        "requestTime": record.started.map(clf_time),
        "httpMethod": record.method,
        "path": record.path,
        "routeKey": record.route_key,
        "status": record.status,
        "protocol": record.protocol,
        "responseLength": record.response_length,
        "responseLatency": record.latency.as_millis() as u64,
        "integrationLatency": record.integration_latency.map(|d| d.as_millis() as u64),
        "errorMessage": record.error_message,
        "errorType": record.error_type,
        "principalId": record.principal_id,
        "apiKeyId": record.api_key_id,
        "cache": record.cache,
        "api": record.api,
        "stage": record.stage,
    })
    .to_string()
}

/// `24/Nov/2026:18:19:55 +0000`, as AWS writes `$context.requestTime`.
fn clf_time(time: std::time::SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (y, m, d) = pylon_common::quota::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let month = MONTHS.get((m - 1) as usize).copied().unwrap_or("Jan");
    format!(
        "{d:02}/{month}/{y}:{:02}:{:02}:{:02} +0000",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn record() -> Record {
        Record {
            request_id: "r-1".into(),
            api: "pets".into(),
            stage: "prod".into(),
            method: "GET".into(),
            path: "/prod/pets/7".into(),
            source_ip: "127.0.0.1".into(),
            route_key: Some("GET /pets/{id}".into()),
            status: 200,
            started: Some(UNIX_EPOCH + Duration::from_secs(1_795_544_395)),
            latency: Duration::from_millis(12),
            integration_latency: Some(Duration::from_millis(9)),
            principal_id: Some("ann \"the admin\"".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_stage_format_fills_context_variables_and_escapes_json() {
        let line = render(
            Some(
                r#"{"id":"$context.requestId","route":"$context.routeKey","who":"$context.authorizer.principalId","status":$context.status,"took":$context.responseLatency,"key":"$context.identity.apiKeyId"}"#,
            ),
            &record(),
        );
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(parsed["id"], "r-1");
        assert_eq!(parsed["route"], "GET /pets/{id}");
        assert_eq!(parsed["who"], "ann \"the admin\"");
        assert_eq!(parsed["status"], 200);
        assert_eq!(parsed["took"], 12);
        assert_eq!(parsed["key"], "-");
    }

    #[test]
    fn text_formats_and_the_default_line() {
        let line = render(
            Some(
                "$context.identity.sourceIp [$context.requestTime] \"$context.httpMethod $context.resourcePath\" $context.status",
            ),
            &record(),
        );
        assert_eq!(
            line,
            "127.0.0.1 [24/Nov/2026:18:19:55 +0000] \"GET /pets/{id}\" 200"
        );
        let default: serde_json::Value = serde_json::from_str(&render(None, &record())).unwrap_or_default();
        assert_eq!(default["integrationLatency"], 9);
        assert_eq!(default["routeKey"], "GET /pets/{id}");
    }
}
