//! OpenTelemetry for the process: traces, metrics and logs exported over
//! OTLP (gRPC, or HTTP/protobuf) when an endpoint is configured, metrics also
//! on a Prometheus scrape endpoint, and the ops listener (`/metrics`,
//! `/healthz`, `/readyz`).
//!
//! The standard variables are honoured — `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)` — and flags win.
//! Exports are batched in bounded queues off the request path: a collector
//! that is down or slow costs at most those queues; failed exports are
//! counted (`pylon.telemetry.dropped`).

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::Full;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Spans waiting for export at most (then dropped and counted).
const SPAN_QUEUE: usize = 4096;
/// The longest one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// An OTLP exporter of `kind` (`SpanExporter`, …) for `url`, over gRPC or
/// HTTP (the latter with the client that runs on this process's runtime).
macro_rules! otlp_exporter {
    ($kind:ident, $protocol:expr, $url:expr) => {
        match $protocol {
            Protocol::Grpc => opentelemetry_otlp::$kind::builder()
                .with_tonic()
                .with_endpoint($url)
                .with_timeout(EXPORT_TIMEOUT)
                .build(),
            protocol => opentelemetry_otlp::$kind::builder()
                .with_http()
                .with_http_client(OnRuntime::new())
                .with_protocol(protocol)
                .with_endpoint($url)
                .with_timeout(EXPORT_TIMEOUT)
                .build(),
        }
    };
}

#[derive(clap::Args, Clone, Debug)]
pub struct TelemetryArgs {
    /// OTLP collector for traces, metrics and logs (default:
    /// OTEL_EXPORTER_OTLP_ENDPOINT; none: nothing is exported over OTLP).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// grpc or http/protobuf.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", default_value = "grpc")]
    otlp_protocol: String,
    /// The ops listener: /metrics (Prometheus), /healthz, /readyz.
    #[arg(long)]
    ops_listen: Option<SocketAddr>,
    /// Share of requests traced (stages with tracing on, no sampled parent,
    /// no ratio of their own); default from OTEL_TRACES_SAMPLER(_ARG), else 1.0.
    #[arg(long)]
    trace_sample_ratio: Option<f64>,
    /// Where access-log lines go: stdout, file, otlp, a comma-separated
    /// pair (stdout,otlp or file,otlp; `both` is stdout,otlp) or off.
    #[arg(long, default_value = "stdout")]
    access_log: String,
    /// The file `--access-log file` appends lines to (created if missing).
    #[arg(long)]
    access_log_file: Option<std::path::PathBuf>,
    /// Seconds between metric exports over OTLP (or OTEL_METRIC_EXPORT_INTERVAL, ms).
    #[arg(long)]
    metrics_interval_s: Option<u64>,
}

impl TelemetryArgs {
    pub fn ops_listen(&self) -> Option<SocketAddr> {
        self.ops_listen
    }
}

/// The providers of this process; flushed and shut down by [`Telemetry::shutdown`].
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: SdkMeterProvider,
    logger: Option<SdkLoggerProvider>,
    registry: prometheus::Registry,
    pub sample_ratio: f64,
    access_log: AccessLogSinks,
}

/// The access-log sinks `--access-log` and `--access-log-file` chose.
#[derive(Clone, Debug, Default, PartialEq)]
struct AccessLogSinks {
    lines: pylon_data_plane::telemetry::access_log::LineSink,
    otlp: bool,
}

impl AccessLogSinks {
    fn parse(value: &str, file: Option<&std::path::Path>) -> anyhow::Result<AccessLogSinks> {
        use pylon_data_plane::telemetry::access_log::LineSink;
        let mut sinks = AccessLogSinks::default();
        let value = if value == "both" { "stdout,otlp" } else { value };
        if value != "off" {
            for sink in value.split(',').map(str::trim) {
                let lines = match sink {
                    "otlp" => {
                        sinks.otlp = true;
                        continue;
                    }
                    "stdout" => LineSink::Stdout,
                    "file" => match file {
                        Some(path) => LineSink::File(path.to_owned()),
                        None => bail!("--access-log file needs --access-log-file PATH"),
                    },
                    "both" | "off" => {
                        bail!(
                            "--access-log: {sink:?} stands alone; in a comma list use stdout, file and otlp"
                        )
                    }
                    other => bail!("--access-log: {other:?} is not stdout, file, otlp, both or off"),
                };
                if sinks.lines != LineSink::Off {
                    bail!("--access-log: lines go to one of stdout and file");
                }
                sinks.lines = lines;
            }
        }
        if file.is_some() && !matches!(sinks.lines, LineSink::File(_)) {
            bail!("--access-log-file is used with --access-log file");
        }
        Ok(sinks)
    }
}

impl Telemetry {
    /// Sets up the global providers for `service` (`pylon-data-plane`, …).
    pub fn init(
        args: &TelemetryArgs,
        service: &str,
        instance: &str,
        labels: &BTreeMap<String, String>,
    ) -> anyhow::Result<Telemetry> {
        let access_log = AccessLogSinks::parse(&args.access_log, args.access_log_file.as_deref())?;
        let protocol = match args.otlp_protocol.as_str() {
            "grpc" => Protocol::Grpc,
            "http/protobuf" => Protocol::HttpBinary,
            other => bail!("--otlp-protocol {other}: expected grpc or http/protobuf"),
        };
        let sample_ratio = match args.trace_sample_ratio {
            Some(ratio) if (0.0..=1.0).contains(&ratio) => ratio,
            Some(_) => bail!("--trace-sample-ratio must be 0.0..=1.0"),
            None => env_sample_ratio(),
        };
        let mut attributes = vec![KeyValue::new("service.instance.id", instance.to_owned())];
        attributes.extend(
            labels
                .iter()
                .map(|(k, v)| KeyValue::new(format!("pylon.label.{k}"), v.clone())),
        );
        let mut resource = Resource::builder().with_attributes(attributes);
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service.to_owned());
        }
        let resource = resource.build();
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );

        let registry = prometheus::Registry::new();
        let prometheus = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()
            .context("Prometheus exporter")?;
        let mut meter = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(prometheus);
        let endpoint = args.otlp_endpoint.as_deref().filter(|e| !e.is_empty());
        let url = |path: &str| -> Option<String> {
            let base = endpoint?.trim_end_matches('/');
            Some(match protocol {
                Protocol::Grpc => base.to_owned(),
                _ => format!("{base}{path}"),
            })
        };
        if let Some(url) = url("/v1/metrics") {
            let exporter = otlp_exporter!(MetricExporter, protocol, url).context("OTLP metric exporter")?;
            let mut reader = PeriodicReader::builder(exporter);
            if let Some(secs) = args.metrics_interval_s {
                reader = reader.with_interval(Duration::from_secs(secs.max(1)));
            }
            meter = meter.with_reader(reader.build());
        }
        let meter = meter.build();
        opentelemetry::global::set_meter_provider(meter.clone());
        let dropped = opentelemetry::global::meter("pylon")
            .u64_counter("pylon.telemetry.dropped")
            .with_description("Spans and log records whose export failed (signal=traces|logs)")
            .build();

        let tracer = match url("/v1/traces") {
            None => None,
            Some(url) => {
                let exporter = otlp_exporter!(SpanExporter, protocol, url).context("OTLP span exporter")?;
                let processor = BatchSpanProcessor::builder(CountingSpans {
                    inner: exporter,
                    dropped: dropped.clone(),
                })
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_max_queue_size(SPAN_QUEUE)
                        .build(),
                )
                .build();
                let provider = SdkTracerProvider::builder()
                    .with_resource(resource.clone())
                    // Sampling is decided per request and stage; follow it.
                    .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
                    .with_span_processor(processor)
                    .build();
                opentelemetry::global::set_tracer_provider(provider.clone());
                Some(provider)
            }
        };
        let logger = match url("/v1/logs") {
            Some(url) if access_log.otlp => {
                let exporter = otlp_exporter!(LogExporter, protocol, url).context("OTLP log exporter")?;
                Some(
                    SdkLoggerProvider::builder()
                        .with_resource(resource)
                        .with_batch_exporter(exporter)
                        .build(),
                )
            }
            _ => None,
        };
        Ok(Telemetry {
            tracer,
            meter,
            logger,
            registry,
            sample_ratio,
            access_log,
        })
    }

    /// The data plane's share: sampling default and access-log sinks.
    pub fn data_plane_options(&self) -> pylon_data_plane::telemetry::TelemetryOptions {
        use opentelemetry::logs::LoggerProvider as _;
        pylon_data_plane::telemetry::TelemetryOptions {
            default_sample_ratio: self.sample_ratio,
            access_log: self.access_log.lines.clone(),
            access_log_otlp: self.logger.as_ref().map(|p| p.logger("pylon-access-log")),
        }
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` (200 once `ready`).
    pub async fn serve_ops(&self, address: SocketAddr, ready: Arc<AtomicBool>) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("--ops-listen {address}"))?;
        tracing::info!(address = %address, "ops endpoint: /metrics /healthz /readyz");
        let registry = self.registry.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (registry, ready) = (registry.clone(), ready.clone());
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let (registry, ready) = (registry.clone(), ready.clone());
                            async move {
                                Ok::<_, std::convert::Infallible>(ops(
                                    request.uri().path(),
                                    &registry,
                                    &ready,
                                ))
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(())
    }

    /// Flushes what is queued (bounded by the exporters' timeouts).
    pub fn shutdown(self) {
        if let Some(tracer) = self.tracer {
            let _ = tracer.shutdown();
        }
        if let Some(logger) = self.logger {
            let _ = logger.shutdown();
        }
        let _ = self.meter.shutdown();
    }
}

fn ops(path: &str, registry: &prometheus::Registry, ready: &AtomicBool) -> hyper::Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => {
            let mut text = Vec::new();
            let encoded =
                prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut text);
            match encoded {
                Ok(()) => (200, "text/plain; version=0.0.4", Bytes::from(text)),
                Err(e) => (500, "text/plain", Bytes::from(e.to_string())),
            }
        }
        "/healthz" => (200, "text/plain", Bytes::from_static(b"ok\n")),
        "/readyz" if ready.load(Ordering::Relaxed) => (200, "text/plain", Bytes::from_static(b"ready\n")),
        "/readyz" => (503, "text/plain", Bytes::from_static(b"not ready\n")),
        _ => (404, "text/plain", Bytes::from_static(b"not found\n")),
    };
    let mut response = hyper::Response::new(Full::new(body));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// OTEL_TRACES_SAMPLER(_ARG) as a ratio for requests without a parent.
fn env_sample_ratio() -> f64 {
    let arg = std::env::var("OTEL_TRACES_SAMPLER_ARG")
        .ok()
        .and_then(|a| a.parse::<f64>().ok())
        .filter(|r| (0.0..=1.0).contains(r));
    match std::env::var("OTEL_TRACES_SAMPLER").as_deref() {
        Ok("always_off" | "parentbased_always_off") => 0.0,
        Ok("traceidratio" | "parentbased_traceidratio") => arg.unwrap_or(1.0),
        _ => 1.0,
    }
}

/// Counts the spans of batches that could not be exported.
#[derive(Debug)]
struct CountingSpans<E> {
    inner: E,
    dropped: Counter<u64>,
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter for CountingSpans<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        if result.is_err() {
            self.dropped.add(spans, &[KeyValue::new("signal", "traces")]);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP/HTTP client: hyper, run on the process's Tokio runtime (the
/// SDK's batch processors export from threads of their own, where a hyper
/// connection could not be driven).
#[derive(Debug)]
struct OnRuntime {
    runtime: tokio::runtime::Handle,
    client: opentelemetry_http::hyper::HyperClient,
}

impl OnRuntime {
    fn new() -> OnRuntime {
        OnRuntime {
            runtime: tokio::runtime::Handle::current(),
            client: opentelemetry_http::hyper::HyperClient::with_default_connector(EXPORT_TIMEOUT, None),
        }
    }
}

#[tonic::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await
            .map_err(|e| Box::new(e) as opentelemetry_http::HttpError)?
    }
}

#[cfg(test)]
mod tests {
    use super::AccessLogSinks;
    use pylon_data_plane::telemetry::access_log::LineSink;
    use std::path::Path;

    #[test]
    fn access_log_sinks_are_one_line_sink_and_maybe_otlp() {
        let file = Some(Path::new("/var/log/pylon/access.log"));
        let parse = |value: &str, file: Option<&Path>| AccessLogSinks::parse(value, file).ok();
        assert_eq!(parse("stdout", None).map(|s| s.lines), Some(LineSink::Stdout));
        assert_eq!(
            parse("both", None),
            Some(AccessLogSinks {
                lines: LineSink::Stdout,
                otlp: true
            })
        );
        assert_eq!(
            parse("file,otlp", file).map(|s| (s.lines, s.otlp)),
            Some((LineSink::File("/var/log/pylon/access.log".into()), true))
        );
        assert_eq!(parse("off", None), Some(AccessLogSinks::default()));
        for (value, file) in [
            ("file", None),
            ("stdout,file", file),
            ("stdout", file),
            ("syslog", None),
            ("both,file", file),
            ("off,stdout", None),
        ] {
            assert_eq!(parse(value, file), None, "{value} {file:?}");
        }
        let why = AccessLogSinks::parse("both,file", file).map_err(|e| e.to_string());
        assert_eq!(
            why,
            Err(r#"--access-log: "both" stands alone; in a comma list use stdout, file and otlp"#.into())
        );
    }
}
