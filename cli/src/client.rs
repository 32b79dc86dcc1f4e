//! Connecting to the admin API: endpoint, bearer token, optional CA; and
//! writes that survive a leader change.
//!
//! Every write (any method but `Get*`/`List*`, and but the membership
//! changes, which take no key) goes out with an `idempotency-key` made of
//! this invocation's base key (random, or `--idempotency-key`) and a digest
//! of the request, and is sent again, with the same key and bytes, while
//! the cluster answers `UNAVAILABLE`, gives no answer within 10 s, or the
//! connection breaks: 100 ms doubling to 2 s between tries, for up to 30 s,
//! each try told on stderr. The control plane answers a retry of a write it
//! already applied with the first outcome, so a create retried after a
//! leader change never turns into `ALREADY_EXISTS`. When the CLI gives up
//! it prints the base key: running the same command again with
//! `--idempotency-key KEY` finds out safely whether the writes were applied
//! (the same requests get the same keys). Two identical requests in one
//! invocation get the same key, so the second answers as the first.

use anyhow::Context as _;
use pylon_proto::admin::v1::admin_service_client::AdminServiceClient;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

/// How an admin command reaches the admin API. The flags are global, so
/// every command's help lists them; their heading says which commands use
/// them (a server refuses them with a clear message).
#[derive(clap::Args, Clone)]
#[command(next_help_heading = "Admin API client (admin commands only; not dev, control-plane, data-plane)")]
pub struct Connection {
    /// Admin API of any control-plane node.
    #[arg(
        long,
        global = true,
        env = "PYLON_ENDPOINT",
        default_value = "http://127.0.0.1:9090"
    )]
    pub endpoint: String,
    /// Bearer token for the admin API.
    #[arg(long, global = true, env = "PYLON_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to trust for an https:// endpoint.
    #[arg(long, global = true, env = "PYLON_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS: its URI SAN
    /// spiffe://pylon/operator/NAME (or reader) names you; instead of --token.
    #[arg(long, global = true, env = "PYLON_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<std::path::PathBuf>,
    /// The key of --client-cert.
    #[arg(long, global = true, env = "PYLON_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<std::path::PathBuf>,
    /// Base of the idempotency keys of this command's writes (default:
    /// random). Give the one a failed command printed to retry it safely.
    #[arg(long, global = true, env = "PYLON_IDEMPOTENCY_KEY")]
    pub idempotency_key: Option<String>,
}

#[derive(Clone)]
pub struct Auth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Admin = AdminServiceClient<InterceptedService<RetryWrites, Auth>>;

/// How long one try of a write may take (a node answers within its own 8 s
/// write timeout).
const TRY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a write keeps being retried.
const RETRY_BUDGET: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The channel, retrying writes as the module docs say.
#[derive(Clone)]
pub struct RetryWrites {
    inner: Channel,
    /// This invocation's base idempotency key.
    base_key: std::sync::Arc<str>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whether a gRPC path (`/package.Service/Method`) names a write that takes
/// an idempotency key.
fn is_keyed_write(path: &str) -> bool {
    let method = path.rsplit('/').next().unwrap_or("");
    !(method.starts_with("Get")
        || method.starts_with("List")
        || method == "AddMember"
        || method == "RemoveMember")
}

/// The canonical form (`pylon_common::snapshot::canonical_form`) of a
/// write whose protobuf encoding differs from run to run for the same
/// request — those holding an API, whose models are `google.protobuf.Struct`
/// `HashMap`s — from its gRPC frame (one uncompressed message); `None` for
/// the others, whose encoding is already the same on every run.
fn canonical_message(path: &str, frame: &[u8]) -> Option<Vec<u8>> {
    use pylon_proto::admin::v1::{
        ApplyBatchRequest, CreateApiRequest, RestoreBackupRequest, UpdateApiRequest,
    };
    fn canonical<T: prost::Message + Default + serde::Serialize>(message: &[u8]) -> Option<Vec<u8>> {
        Some(pylon_common::snapshot::canonical_form(&T::decode(message).ok()?))
    }
    let (&[0], rest) = frame.split_at_checked(1)? else {
        return None;
    };
    let message = rest.get(4..)?;
    match path.rsplit('/').next()? {
        "CreateApi" => canonical::<CreateApiRequest>(message),
        "UpdateApi" => canonical::<UpdateApiRequest>(message),
        "ApplyBatch" => canonical::<ApplyBatchRequest>(message),
        "RestoreBackup" => canonical::<RestoreBackupRequest>(message),
        _ => None,
    }
}

/// A trailers-only answer with `grpc-status: 14`.
fn unavailable(response: &http::Response<tonic::body::Body>) -> bool {
    response.headers().get("grpc-status").is_some_and(|v| v == "14")
}

impl tower_service::Service<http::Request<tonic::body::Body>> for RetryWrites {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        // The clone is not ready yet; the one polled ready serves this call.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        let base = self.base_key.clone();
        Box::pin(async move {
            if !is_keyed_write(request.uri().path()) {
                return ready.call(request).await.map_err(Into::into);
            }
            use http_body_util::BodyExt as _;
            use sha2::Digest as _;
            let (mut parts, body) = request.into_parts();
            let bytes = body.collect().await?.to_bytes();
            if !parts.headers.contains_key("idempotency-key") {
                let mut digest = sha2::Sha256::new();
                digest.update(parts.uri.path().as_bytes());
                match canonical_message(parts.uri.path(), &bytes) {
                    Some(canonical) => digest.update(canonical),
                    None => digest.update(&bytes),
                }
                let digest = hex::encode(&digest.finalize()[..12]);
                let key = format!("{base}-{digest}");
                parts
                    .headers
                    .insert("idempotency-key", http::HeaderValue::from_str(&key)?);
            }
            let deadline = std::time::Instant::now() + RETRY_BUDGET;
            let mut backoff = FIRST_BACKOFF;
            loop {
                let attempt = http::Request::from_parts(
                    parts.clone(),
                    tonic::body::Body::new(http_body_util::Full::new(bytes.clone())),
                );
                let outcome = match tokio::time::timeout(TRY_TIMEOUT, ready.call(attempt)).await {
                    Ok(outcome) => outcome.map_err(BoxError::from),
                    Err(_) => Err(Box::new(tonic::Status::deadline_exceeded(format!(
                        "no answer within {} s",
                        TRY_TIMEOUT.as_secs()
                    ))) as BoxError),
                };
                let retry = match &outcome {
                    Ok(response) => unavailable(response),
                    Err(_) => true,
                };
                if !retry {
                    return outcome;
                }
                if std::time::Instant::now() + backoff > deadline {
                    eprintln!(
                        "giving up: the write may or may not have been applied; run the same command again with --idempotency-key {base} to find out safely"
                    );
                    return outcome;
                }
                let why = match &outcome {
                    Ok(response) => response
                        .headers()
                        .get("grpc-message")
                        .and_then(|v| v.to_str().ok())
                        // Percent-encoded (gRPC over HTTP/2).
                        .map(|m| {
                            percent_encoding::percent_decode_str(m)
                                .decode_utf8_lossy()
                                .into_owned()
                        })
                        .unwrap_or_else(|| "UNAVAILABLE".to_owned()),
                    Err(e) => e.to_string(),
                };
                eprintln!(
                    "retrying in {} ms with the same idempotency key: {why}",
                    backoff.as_millis()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                futures::future::poll_fn(|cx| ready.poll_ready(cx)).await?;
            }
        })
    }
}

impl Connection {
    pub async fn connect(&self) -> anyhow::Result<Admin> {
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())
            .with_context(|| format!("--endpoint {}", self.endpoint))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30));
        if self.endpoint.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(path) = &self.ca_cert {
                let pem = std::fs::read(path).with_context(|| format!("--ca-cert {}", path.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
                let cert =
                    std::fs::read(cert).with_context(|| format!("--client-cert {}", cert.display()))?;
                let key = std::fs::read(key).with_context(|| format!("--client-key {}", key.display()))?;
                tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.endpoint))?;
        let auth = match &self.token {
            Some(token) => Some(
                format!("Bearer {}", token.trim())
                    .parse()
                    .context("--token contains characters not allowed in a header")?,
            ),
            None => None,
        };
        let base_key = match &self.idempotency_key {
            Some(key) if !key.is_empty() && key.len() <= 100 && key.bytes().all(|b| b.is_ascii_graphic()) => {
                key.clone()
            }
            Some(_) => anyhow::bail!("--idempotency-key: 1-100 visible ASCII characters"),
            None => format!("{:032x}", rand::random::<u128>()),
        };
        Ok(AdminServiceClient::with_interceptor(
            RetryWrites {
                inner: channel,
                base_key: base_key.into(),
            },
            Auth(auth),
        )
        .max_decoding_message_size(256 << 20))
    }
}

/// Turns a gRPC error into a one-line message: `NotFound: API pets not found`.
pub fn explain(status: Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt as _, StreamBody};
    use hyper::body::Frame;
    use pylon_proto::admin::v1::{CreateApiRequest, GetApiRequest};
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_request_with_a_model_frames_to_the_same_key_material_on_every_run() {
        use prost::Message as _;
        use pylon_proto::config::v1::Api;
        use pylon_proto::wkt::{Struct, Value};
        let schema: Struct = (0..32).map(|i| (format!("p{i}"), Value::from("x"))).collect();
        let api = Api {
            name: "pets".into(),
            models: [("Pet".to_owned(), schema)].into_iter().collect(),
            ..Default::default()
        };
        let sent = CreateApiRequest { api: Some(api) }.encode_to_vec();
        // Each run parses the file afresh, then frames the message.
        let frame = || {
            let message = CreateApiRequest::decode(&sent[..])
                .expect("decodes")
                .encode_to_vec();
            let mut frame = vec![0];
            frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
            frame.extend_from_slice(&message);
            frame
        };
        let path = "/pylon.admin.v1.AdminService/CreateApi";
        let first = canonical_message(path, &frame()).expect("canonical");
        for _ in 0..8 {
            assert_eq!(canonical_message(path, &frame()), Some(first.clone()));
        }
        assert_eq!(
            canonical_message("/pylon.admin.v1.AdminService/DeleteApi", &frame()),
            None
        );
        let mut compressed = frame();
        compressed[0] = 1;
        assert_eq!(canonical_message(path, &compressed), None);
    }

    type Seen = Arc<Mutex<Vec<(String, String, Bytes)>>>;
    type Reply = http::Response<
        StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>>>,
    >;

    /// A gRPC server on loopback that answers every call `UNAVAILABLE`
    /// (trailers-only, as tonic does) until it has seen `failures` calls,
    /// then an empty message; it records each call's path, key and body.
    async fn flaky_server(failures: usize) -> (String, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let seen: Seen = Arc::default();
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = record.clone();
                let service =
                    hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                        let record = record.clone();
                        async move {
                            let path = request.uri().path().to_owned();
                            let key = request
                                .headers()
                                .get("idempotency-key")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let body = request
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let calls = {
                                let mut seen = record.lock().unwrap_or_else(|p| p.into_inner());
                                seen.push((path, key, body));
                                seen.len()
                            };
                            let reply = http::Response::builder().header("content-type", "application/grpc");
                            let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
                                if calls <= failures {
                                    Vec::new()
                                } else {
                                    let mut trailers = http::HeaderMap::new();
                                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                                    vec![
                                        Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
                                        Ok(Frame::trailers(trailers)),
                                    ]
                                };
                            let reply = if calls <= failures {
                                reply
                                    .header("grpc-status", "14")
                                    .header("grpc-message", "the%20leader%20changed")
                            } else {
                                reply
                            };
                            let reply: Reply = reply
                                .body(StreamBody::new(futures::stream::iter(frames)))
                                .expect("a valid response");
                            Ok::<_, std::convert::Infallible>(reply)
                        }
                    });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        (format!("http://{address}"), seen)
    }

    fn connection(endpoint: String) -> Connection {
        Connection {
            endpoint,
            token: None,
            ca_cert: None,
            client_cert: None,
            client_key: None,
            idempotency_key: None,
        }
    }

    #[tokio::test]
    async fn a_write_answered_unavailable_is_sent_again_with_the_same_key_and_bytes() {
        let (endpoint, seen) = flaky_server(2).await;
        let mut admin = connection(endpoint).connect().await.expect("connect");
        let request = CreateApiRequest {
            api: Some(pylon_proto::config::v1::Api {
                name: "pets".into(),
                ..Default::default()
            }),
        };
        admin
            .create_api(request)
            .await
            .expect("answered after two retries");
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].1.len(), 32 + 1 + 24, "a key was added: {:?}", seen[0].1);
        assert!(seen.iter().all(|(path, key, body)| path.ends_with("/CreateApi")
            && *key == seen[0].1
            && *body == seen[0].2));
    }

    #[tokio::test]
    async fn a_read_is_not_retried_and_each_write_gets_its_own_key_from_the_base_key() {
        let (endpoint, seen) = flaky_server(1).await;
        let mut given = connection(endpoint);
        given.idempotency_key = Some("from-a-failed-run".into());
        let mut admin = given.connect().await.expect("connect");
        let read = admin.get_api(GetApiRequest::default()).await;
        assert_eq!(
            read.map(drop).map_err(|s| s.code()),
            Err(tonic::Code::Unavailable)
        );
        let named = |name: &str| CreateApiRequest {
            api: Some(pylon_proto::config::v1::Api {
                name: name.into(),
                ..Default::default()
            }),
        };
        admin.create_api(named("a")).await.expect("first write");
        admin.create_api(named("b")).await.expect("second write");
        admin.create_api(named("a")).await.expect("the first again");
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0].1, "", "reads carry no key");
        assert!(seen[1].1.starts_with("from-a-failed-run-"), "{}", seen[1].1);
        assert_ne!(seen[1].1, seen[2].1, "another request, another key");
        assert_eq!(seen[1].1, seen[3].1, "the same request, the same key");
    }
}
