//! Data-plane pieces for end-to-end tests: a real HTTP backend, `pylon
//! data-plane` processes, and a small HTTP client that addresses APIs by Host.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An HTTP/1.1 + h2c backend on a free loopback port. It answers every path
/// with JSON describing the request (`backend`, `method`, `path`, `query`,
/// forwarded headers, `body_bytes`, and `n`, its count of requests so far);
/// `/slow/{ms}` first sleeps that long; a `cc=VALUE` query parameter comes
/// back as `Cache-Control: VALUE`, `vary=VALUE` as `Vary: VALUE`, `pad=N`
/// adds N bytes to the body.
pub struct Backend {
    pub address: SocketAddr,
    pub requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("backend bind: {e}"));
        let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let requests = Arc::new(AtomicU64::new(0));
        let name: Arc<str> = Arc::from(name);
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let name = name.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let name = name.clone();
                        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
                        async move { Ok::<_, Infallible>(answer(&name, n, request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            address,
            requests,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(name: &str, n: u64, request: Request<hyper::body::Incoming>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    if let Some(ms) = parts
        .uri
        .path()
        .strip_prefix("/slow/")
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body_bytes = body.len();
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .keys()
        .map(|name| {
            let values: Vec<&str> = parts
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (
                name.as_str().to_owned(),
                serde_json::Value::from(values.join(",")),
            )
        })
        .collect();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let query: Vec<(String, String)> = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let pad = param("pad").and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
    let json = serde_json::json!({
        "backend": name,
        "n": n,
        "pad": "x".repeat(pad),
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "x-forwarded-for": header("x-forwarded-for"),
        "x-forwarded-host": header("x-forwarded-host"),
        "x-forwarded-proto": header("x-forwarded-proto"),
        "x-pylon-request-id": header("x-pylon-request-id"),
        "connection": header("connection"),
        "body_bytes": body_bytes,
        "headers": headers,
        // The body as text, when it is small enough to echo.
        "body": if body_bytes <= 4096 { String::from_utf8_lossy(&body).into_owned() } else { String::new() },
    });
    let mut response = hyper::Response::new(Full::new(Bytes::from(json.to_string())));
    response
        .headers_mut()
        .insert("content-type", http::HeaderValue::from_static("application/json"));
    // Fields the test asks for: `?cc=`, `?vary=`, `?etag=`, `?lm=` (Last-Modified).
    for (name, field) in [
        ("cc", "cache-control"),
        ("vary", "vary"),
        ("etag", "etag"),
        ("lm", "last-modified"),
    ] {
        if let Some(value) = param(name).and_then(|v| http::HeaderValue::from_str(&v).ok()) {
            response.headers_mut().insert(field, value);
        }
    }
    response
}

/// A JSON endpoint on a free loopback port (an issuer's JWKS, a request
/// authorizer): `answer(path, request body)` gives the status and JSON body.
/// `calls` counts requests.
pub struct JsonServer {
    pub address: SocketAddr,
    pub calls: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

type Answer = dyn Fn(&str, serde_json::Value) -> (u16, serde_json::Value) + Send + Sync;

impl JsonServer {
    pub async fn start(
        answer: impl Fn(&str, serde_json::Value) -> (u16, serde_json::Value) + Send + Sync + 'static,
    ) -> JsonServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("json server bind: {e}"));
        let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let calls = Arc::new(AtomicU64::new(0));
        let answer: Arc<Answer> = Arc::new(answer);
        let counter = calls.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let answer = answer.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let answer = answer.clone();
                        counter.fetch_add(1, Ordering::Relaxed);
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                            let (status, reply) = answer(parts.uri.path(), json);
                            let mut response =
                                hyper::Response::new(Full::new(Bytes::from(reply.to_string())));
                            *response.status_mut() =
                                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                            response
                                .headers_mut()
                                .insert("content-type", http::HeaderValue::from_static("application/json"));
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        JsonServer { address, calls, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Drop for JsonServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A backend that answers anything with bytes that are not HTTP.
pub async fn garbage_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(b"THIS IS NOT HTTP\r\n\r\n").await;
            });
        }
    });
    (address, task)
}

/// One `pylon data-plane` process.
pub struct DataPlaneNode {
    pub node_id: String,
    pub port: u16,
    log: PathBuf,
    args: Vec<String>,
    /// A file-descriptor limit for the process (`prlimit --nofile`).
    open_files: Option<u64>,
    child: Option<Child>,
}

impl DataPlaneNode {
    /// [`DataPlaneNode::start`] with at most `open_files` file descriptors.
    pub fn start_with_open_files(
        dir: &Path,
        node_id: &str,
        control_planes: &[String],
        extra: &[&str],
        open_files: u64,
    ) -> DataPlaneNode {
        let mut node = DataPlaneNode::configure(dir, node_id, control_planes, extra);
        node.open_files = Some(open_files);
        node.restart().unwrap_or_else(|e| panic!("{e:#}"));
        node
    }

    /// Starts a node subscribed to `control_planes` (admin endpoints), with a
    /// snapshot cache in `dir`.
    pub fn start(dir: &Path, node_id: &str, control_planes: &[String], extra: &[&str]) -> DataPlaneNode {
        let mut node = DataPlaneNode::configure(dir, node_id, control_planes, extra);
        node.restart().unwrap_or_else(|e| panic!("{e:#}"));
        node
    }

    fn configure(dir: &Path, node_id: &str, control_planes: &[String], extra: &[&str]) -> DataPlaneNode {
        let port = crate::free_port();
        let mut args = vec![
            format!("--listen=127.0.0.1:{port}"),
            format!("--control-plane={}", control_planes.join(",")),
            format!("--node-id={node_id}"),
            format!(
                "--snapshot-cache={}",
                dir.join(format!("{node_id}.snapshot")).display()
            ),
            "--drain-timeout-s=2".to_owned(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        DataPlaneNode {
            node_id: node_id.to_owned(),
            port,
            log: dir.join(format!("{node_id}.log")),
            args,
            open_files: None,
            child: None,
        }
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("data plane {} is already running", self.node_id);
        }
        self.child = Some(crate::spawn_pylon_limited(
            "data-plane",
            &self.args,
            &self.log,
            "info",
            self.open_files,
        )?);
        Ok(())
    }

    pub fn kill(&mut self) {
        crate::kill(&mut self.child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits up to `timeout` for the process to exit: how it exited, or
    /// `None` while it still runs (or if it was not running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut()?.try_wait().ok().flatten() {
                self.child = None;
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The access-log lines in the node's log so far (its stdout, where
    /// access logs go by default), as JSON; other lines are skipped.
    pub fn access_lines(&self) -> Vec<serde_json::Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .collect()
    }
}

impl Drop for DataPlaneNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Resolves every name to 127.0.0.1, so requests can name any API host
/// (`shop.localhost`, a custom domain) and still reach the proxy on loopback.
#[derive(Clone, Copy)]
pub struct Loopback;

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for Loopback {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        std::future::ready(Ok(vec![SocketAddr::from(([127, 0, 0, 1], 0))].into_iter()))
    }
}

/// Sends requests to a proxy address, addressed to the request's Host (the
/// URI carries it, so HTTP/2's `:authority` names it too).
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector<Loopback>, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::new(false)
    }
}

impl HttpClient {
    pub fn new(http2_only: bool) -> HttpClient {
        let mut builder = Client::builder(TokioExecutor::new());
        builder.http2_only(http2_only).pool_max_idle_per_host(64);
        let mut connector = HttpConnector::new_with_resolver(Loopback);
        connector.set_nodelay(true);
        HttpClient {
            client: builder.build(connector),
        }
    }

    pub async fn send(&self, address: SocketAddr, request: Request<Full<Bytes>>) -> anyhow::Result<Reply> {
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let host = parts
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| address.ip().to_string());
        match host.split_once(':') {
            // A Host with its port is sent as it is, whichever node this
            // is: every node behind a load balancer sees the same one.
            Some((name, _)) => parts.uri = format!("http://{name}:{}{path}", address.port()).parse()?,
            None => {
                parts.uri = format!("http://{host}:{}{path}", address.port()).parse()?;
                // hyper writes Host from the URI (with the port) for HTTP/1.1.
                parts.headers.remove("host");
            }
        }
        let request = Request::from_parts(parts, body);
        let response = tokio::time::timeout(Duration::from_secs(40), self.client.request(request))
            .await
            .context("no response within 40 s")??;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// `GET path` with `Host: host`.
    pub async fn get(&self, address: SocketAddr, host: &str, path: &str) -> anyhow::Result<Reply> {
        let request = Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))?;
        self.send(address, request).await
    }
}

/// Writes raw bytes to `address` and reads the answer until the peer closes
/// or `timeout` passes.
pub async fn raw_exchange(address: SocketAddr, bytes: &[u8], timeout: Duration) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.write_all(bytes).await?;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(timeout, stream.read_to_end(&mut answer)).await;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// A backend that accepts connections and never answers (nor closes them).
pub struct SilentBackend {
    pub address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl SilentBackend {
    pub async fn start() -> SilentBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("silent backend bind: {e}"));
        let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        SilentBackend { address, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for SilentBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A request as a raw-socket backend received it.
#[derive(Clone, Debug, Default)]
pub struct RawRequest {
    /// The request line, `GET /x HTTP/1.1`.
    pub line: String,
    /// Header lines in the order received, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl RawRequest {
    /// Every value of header `name` (case-insensitive), one per field line.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn path(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or("")
    }
}

type RawReply = dyn Fn(&RawRequest) -> Vec<u8> + Send + Sync;

/// An HTTP/1.1 backend on raw sockets: it records each request exactly as
/// received (header lines, names as sent, de-chunked body) and answers with
/// the bytes `reply` returns, so a test controls the framing byte for byte.
pub struct RawBackend {
    pub address: SocketAddr,
    received: Arc<std::sync::Mutex<Vec<RawRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawBackend {
    pub async fn start(reply: impl Fn(&RawRequest) -> Vec<u8> + Send + Sync + 'static) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("raw backend bind: {e}"));
        let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let reply: Arc<RawReply> = Arc::new(reply);
        let seen = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, reply) = (seen.clone(), reply.clone());
                tokio::spawn(async move {
                    let mut stream = tokio::io::BufReader::new(stream);
                    while let Ok(Some(request)) = read_raw_request(&mut stream).await {
                        let answer = reply(&request);
                        if let Ok(mut seen) = seen.lock() {
                            seen.push(request);
                        }
                        if stream.get_mut().write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        RawBackend {
            address,
            received,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<RawRequest> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP/1.1 response: status line, `headers` as given (no framing added)
/// and `body` as given.
pub fn raw_response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Reads one request (head and body by Content-Length or chunked);
/// `None` at a clean end of the connection.
async fn read_raw_request<R>(stream: &mut R) -> anyhow::Result<Option<RawRequest>>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    use tokio::io::AsyncBufReadExt;
    let mut request = RawRequest::default();
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    request.line = line.trim_end().to_owned();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            bail!("connection closed in the head");
        }
        let field = line.trim_end_matches(['\r', '\n']);
        if field.is_empty() {
            break;
        }
        let (name, value) = field.split_once(':').context("a header line without ':'")?;
        request.headers.push((name.to_owned(), value.trim().to_owned()));
    }
    let chunked = request
        .values("transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            line.clear();
            stream.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .context("chunk size")?;
            let mut chunk = vec![0; size + 2];
            stream.read_exact(&mut chunk).await?;
            if size == 0 {
                break;
            }
            request.body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = request.values("content-length").first() {
        let mut body = vec![0; length.parse::<usize>().context("content-length")?];
        stream.read_exact(&mut body).await?;
        request.body = body;
    }
    Ok(Some(request))
}

/// Opens a connection, writes `bytes`, and reads the answer's head and
/// (when it has a Content-Length) body; the connection stays open for more.
pub async fn raw_request(stream: &mut tokio::net::TcpStream, bytes: &[u8]) -> anyhow::Result<String> {
    stream.write_all(bytes).await?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .context("no answer within 10 s")??;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if body.len() >= length {
                break;
            }
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// One HTTP/2 request (h2c, prior knowledge) for `http://{authority}{path}`
/// with exactly these extra header fields, in order — fields hyper's client
/// would not send, such as a `host` beside `:authority` or several
/// `cookie` fields. Its status, headers and body.
pub async fn h2_request(
    address: SocketAddr,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(StatusCode, HeaderMap, Bytes)> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let (client, connection) = h2::client::handshake(tcp).await?;
    let driver = tokio::spawn(connection);
    let mut client = client.ready().await?;
    let mut request = Request::get(format!("http://{authority}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (response, _) = client.send_request(request.body(())?, true)?;
    let exchange = async {
        let (parts, mut body) = response.await?.into_parts();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        anyhow::Ok((parts.status, parts.headers, Bytes::from(bytes)))
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .context("no HTTP/2 answer within 10 s")?;
    driver.abort();
    answer
}
