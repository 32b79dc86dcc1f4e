//! The front door holds: HTTP framing both ways, header hygiene, the Host a
//! backend is told, and status mappings — driven with raw sockets (HTTP/1.1)
//! and the `h2` crate (HTTP/2) against a raw-socket backend that records
//! every request byte for byte.

use crate::support::{deploy_serving, edit_stage, wait_applied};
use bytes::Bytes;
use pylon_proto::admin::v1::*;
use pylon_proto::config::v1::Api;
use pylon_tests::gateway::{
    DataPlaneNode, HttpClient, RawBackend, RawRequest, SilentBackend, h2_request, raw_exchange, raw_request,
    raw_response,
};
use pylon_tests::{Admin, Cluster, serial};
use serde_json::json;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const HOST: &str = "front.localhost";
const WHOLE: &[u8] = b"the whole body, every byte of it";
/// More than socket buffers hold.
const BIG: usize = 16 << 20;
/// The MOCK body of `/prod/whole`.
const HANDED_WHOLE: usize = 2 << 20;

/// The backend's answers: `/both` frames its body with Content-Length *and*
/// chunked (the length lies), `/gzip-te` uses a transfer coding Pylon does
/// not decode, `/status101` asks a mapping for status 101; anything else is
/// a small 200.
fn answer(request: &RawRequest) -> Vec<u8> {
    let chunked = |body: &[u8]| {
        let mut out = format!("{:x}\r\n", body.len()).into_bytes();
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n0\r\n\r\n");
        out
    };
    match request.path() {
        "/both" => raw_response(
            200,
            &[("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
            &chunked(WHOLE),
        ),
        "/gzip-te" => raw_response(200, &[("Transfer-Encoding", "gzip, chunked")], &chunked(WHOLE)),
        "/status101" => raw_response(200, &[("Content-Length", "2"), ("X-Status", "101")], b"ok"),
        "/big" => raw_response(200, &[("Content-Length", &BIG.to_string())], &vec![b'x'; BIG]),
        "/switch" => raw_response(101, &[("Upgrade", "x"), ("Connection", "upgrade")], b""),
        "/status600" => raw_response(600, &[("Content-Length", "2")], b"ok"),
        "/http10" => b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        // 10 of 100 bytes, then silence on an open connection.
        "/stalls" => raw_response(200, &[("Content-Length", "100")], &[b'x'; 10]),
        // A whole chunked answer with a trailer field.
        "/trailers" => raw_response(
            200,
            &[("Transfer-Encoding", "chunked"), ("Trailer", "X-T")],
            b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
        ),
        // A chunk, then a chunk-size line that is no number.
        "/breaks" => raw_response(200, &[("Transfer-Encoding", "chunked")], b"5\r\nhello\r\nzz\r\n"),
        "/cl-list" => raw_response(
            200,
            &[("Content-Length", "2, 2"), ("X_Pylon_Canary", "true")],
            b"ok",
        ),
        _ => raw_response(200, &[("Content-Length", "2")], b"ok"),
    }
}

fn front_api() -> Api {
    let proxy_to = |backend: &str, path: &str| json!({"type": "HTTP_PROXY", "uri": format!("${{stageVariables.{backend}}}{path}")});
    let proxy = |path: &str| proxy_to("backend", path);
    serde_json::from_value(json!({
        "name": "front",
        "models": {"anything": {"type": "object"}},
        "routes": [
            {"method": "GET", "path": "/both", "integration": proxy("/both")},
            {"method": "GET", "path": "/gzip-te", "integration": proxy("/gzip-te")},
            {"method": "GET", "path": "/big", "integration": proxy("/big")},
            // An answer handed to hyper whole (as a cache hit's is).
            {"method": "GET", "path": "/whole", "integration": {"type": "MOCK", "mock": {"statusCode": 200, "body": "x".repeat(HANDED_WHOLE)}}},
            {"method": "GET", "path": "/switch", "integration": proxy("/switch")},
            {"method": "GET", "path": "/status600", "integration": proxy("/status600")},
            {"method": "GET", "path": "/http10", "integration": proxy("/http10")},
            {"method": "GET", "path": "/cl-list", "integration": proxy("/cl-list")},
            {"method": "POST", "path": "/slow-upload",
             "integration": {"type": "HTTP_PROXY", "uri": "${stageVariables.backend}/slow-upload", "timeoutMs": 1000}},
            {"method": "GET", "path": "/never", "integration": proxy_to("silent", "/never")},
            {"method": "GET", "path": "/stalls",
             "integration": {"type": "HTTP_PROXY", "uri": "${stageVariables.backend}/stalls", "timeoutMs": 500}},
            {"method": "GET", "path": "/breaks", "integration": proxy("/breaks")},
            {"method": "POST", "path": "/trailers", "integration": proxy("/trailers")},
            {"method": "POST", "path": "/early", "integration": proxy_to("early", "/early")},
            {"method": "GET", "path": "/status101",
             "integration": {"type": "HTTP", "uri": "${stageVariables.backend}/status101"},
             "responseParameters": {"overwrite:statuscode": "$response.header.x-status"}},
            {"method": "POST", "path": "/validated", "integration": proxy("/validated"),
             "validation": {"bodyModels": {"application/json": "anything"}}},
            {"method": "ANY", "path": "/echo/{proxy+}", "integration": proxy("/echo/{proxy}")},
        ],
    }))
    .expect("API definition")
}

/// A one-node control plane, a data plane with `flags`, the raw backend,
/// and the `front` API deployed on stage `prod`.
struct Front {
    node: DataPlaneNode,
    backend: RawBackend,
    /// Takes requests and never answers.
    _silent: SilentBackend,
    /// Answers before reading the request body.
    _early: EarlyBackend,
    admin: Admin,
    _dir: tempfile::TempDir,
    _cluster: Cluster,
}

impl Front {
    async fn start(flags: &[&str]) -> Front {
        let cluster = Cluster::start(1).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let node = DataPlaneNode::start(dir.path(), "dp-front", &[cluster.nodes[0].endpoint()], flags);
        let backend = RawBackend::start(answer).await;
        let silent = SilentBackend::start().await;
        let early = EarlyBackend::start().await;
        let mut admin = cluster.nodes[0].admin().await.expect("admin");
        let variables = [
            ("backend", backend.url()),
            ("silent", silent.url()),
            ("early", early.url()),
        ];
        let variables: Vec<(&str, &str)> = variables.iter().map(|(k, v)| (*k, v.as_str())).collect();
        deploy_serving(&mut admin, front_api(), "prod", &variables, 1).await;
        Front {
            node,
            backend,
            _silent: silent,
            _early: early,
            admin,
            _dir: dir,
            _cluster: cluster,
        }
    }

    fn authority(&self) -> String {
        format!("{HOST}:{}", self.node.port)
    }

    /// Raw HTTP/1.1 bytes in, the answer's text out (the connection is
    /// closed by the proxy or after two seconds).
    async fn raw(&self, bytes: &str) -> String {
        raw_exchange(self.node.address(), bytes.as_bytes(), Duration::from_secs(2))
            .await
            .expect("raw exchange")
    }

    /// The last request the backend received for `path`.
    fn received(&self, path: &str) -> RawRequest {
        self.backend
            .received()
            .into_iter()
            .rev()
            .find(|r| r.path() == path)
            .unwrap_or_else(|| panic!("the backend never received {path}"))
    }

    /// The access-log lines the node wrote so far.
    fn access_log(&self) -> Vec<serde_json::Value> {
        self.node
            .log_text()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line.get("requestId").is_some())
            .collect()
    }
}

/// A backend that answers as soon as it has a request head, without
/// reading the body: a chunk at once, the last chunk 3 s later.
struct EarlyBackend {
    address: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl EarlyBackend {
    async fn start() -> EarlyBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let start = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
                    if stream.write_all(start).await.is_ok() {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        let _ = stream.write_all(b"0\r\n\r\n").await;
                    }
                });
            }
        });
        EarlyBackend { address, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for EarlyBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

#[tokio::test]
async fn a_backend_that_frames_with_both_content_length_and_chunked_is_read_as_chunked() {
    let _serial = serial().await;
    let front = Front::start(&[]).await;
    for client in [HttpClient::new(false), HttpClient::new(true)] {
        let reply = client
            .get(front.node.address(), HOST, "/prod/both")
            .await
            .expect("reply");
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(
            reply.body.as_bytes(),
            WHOLE,
            "never a body cut to the lying length"
        );
    }
    // A transfer coding Pylon does not decode is the backend's fault: 502,
    // never gzip bytes passed on as if they were plain.
    let reply = HttpClient::default()
        .get(front.node.address(), HOST, "/prod/gzip-te")
        .await
        .expect("reply");
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(reply.header("x-pylon-error-type"), "INTEGRATION_FAILURE");
    // A switch nobody asked for, and a status that is none, are 502 too.
    for path in ["/prod/switch", "/prod/status600"] {
        let answer = front
            .raw(&format!(
                "GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
            ))
            .await;
        assert_eq!(status_of(&answer), 502, "{path}: {answer}");
    }
    // A Content-Length list becomes one value; an underscore spelling of a
    // gateway header never reaches the client.
    let answer = front
        .raw(&format!(
            "GET /prod/cl-list HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
        ))
        .await;
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains("content-length: 2\r\n") && !lower.contains("x_pylon"),
        "{answer}"
    );
    // An HTTP/1.0 backend does not make the client's answer HTTP/1.0.
    let answer = front
        .raw(&format!(
            "GET /prod/http10 HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
        ))
        .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_clients_own_framing_errors_are_4xx_and_never_counted_as_backend_failures() {
    let _serial = serial().await;
    let front = Front::start(&["--body-read-timeout-s=1"]).await;
    let head = |framing: &str| {
        format!(
            "POST /prod/echo/upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n{framing}\r\n"
        )
    };

    // A malformed chunk size.
    let answer = front
        .raw(&format!(
            "{}zz\r\nhello\r\n0\r\n\r\n",
            head("Transfer-Encoding: chunked\r\n")
        ))
        .await;
    assert_eq!(status_of(&answer), 400, "{answer}");

    // A body cut short: the client half-closes after 10 of 100 bytes.
    let mut stream = tokio::net::TcpStream::connect(front.node.address())
        .await
        .expect("connect");
    stream
        .write_all(format!("{}0123456789", head("Content-Length: 100\r\n")).as_bytes())
        .await
        .expect("write");
    stream.shutdown().await.expect("half-close");
    let answer = raw_request(&mut stream, b"").await.expect("answer");
    assert_eq!(status_of(&answer), 400, "{answer}");

    // Framing that cannot be trusted ends the connection: a request
    // pipelined behind `chunked, chunked` is never read.
    let answer = front
        .raw(&format!(
            "{}5\r\nhello\r\n0\r\n\r\nGET /prod/echo/smuggled HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
            head("Transfer-Encoding: chunked, chunked\r\n")
        ))
        .await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");

    // A transfer coding other than chunked: 501 (RFC 9112 §6.1).
    let answer = front
        .raw(&format!(
            "{}5\r\nhello\r\n0\r\n\r\n",
            head("Transfer-Encoding: gzip, chunked\r\n")
        ))
        .await;
    assert_eq!(status_of(&answer), 501, "{answer}");

    // A body that stalls: 408 after the body read timeout, on a streamed
    // route and on one that reads the whole body (validation).
    for path in ["/prod/echo/upload", "/prod/validated"] {
        let mut stream = tokio::net::TcpStream::connect(front.node.address())
            .await
            .expect("connect");
        let started = std::time::Instant::now();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"a\":"
        );
        let answer = raw_request(&mut stream, request.as_bytes())
            .await
            .expect("answer");
        assert_eq!(status_of(&answer), 408, "{path}: {answer}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path}: {:?}",
            started.elapsed()
        );
    }

    // A body that trickles (never stalling) past the integration's
    // timeout: the backend was waiting for the client, 408 not 504.
    let mut stream = tokio::net::TcpStream::connect(front.node.address())
        .await
        .expect("connect");
    stream
        .write_all(
            format!("POST /prod/slow-upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write");
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if stream.write_all(b"x").await.is_err() {
            break;
        }
    }
    let answer = raw_request(&mut stream, b"").await.expect("answer");
    assert_eq!(status_of(&answer), 408, "{answer}");

    // A client that leaves while its request is at the backend is logged
    // and counted (499), not forgotten.
    let mut stream = tokio::net::TcpStream::connect(front.node.address())
        .await
        .expect("connect");
    stream
        .write_all(format!("GET /prod/never HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stream);
    pylon_tests::eventually(
        "the abandoned request in the access log",
        Duration::from_secs(5),
        || async {
            front
                .access_log()
                .iter()
                .any(|line| line["path"] == "/prod/never" && line["status"] == 499)
                .then_some(())
        },
    )
    .await;

    // None of it counts as a backend failure in the access log.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let statuses: Vec<u64> = front
        .access_log()
        .iter()
        .filter_map(|line| line["status"].as_u64())
        .collect();
    assert!(statuses.iter().all(|s| *s < 500 || *s == 501), "{statuses:?}");
    assert!(statuses.contains(&408) && statuses.contains(&400), "{statuses:?}");
}

/// The version and status of every answer in `text`, in order.
fn status_lines(text: &str) -> Vec<&str> {
    text.match_indices("HTTP/1.")
        .filter_map(|(at, _)| text.get(at..at + 12))
        .collect()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_odd_heads_get_their_own_status() {
    let _serial = serial().await;
    let front = Front::start(&[]).await;
    let host = front.authority();

    // Pipelined in one write: two bodyless GETs, a HEAD, then a POST with a
    // body and two more GETs.
    let get =
        |path: &str, extra: &str| format!("GET /prod/echo/{path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n");
    let burst = [
        get("p1", ""),
        get("p2", "X-Two: a\r\nX-Two: b\r\n"),
        format!("HEAD /prod/echo/p3 HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("POST /prod/echo/p4 HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello"),
        get("p5", ""),
        get("p6", "Connection: close\r\n"),
    ]
    .concat();
    let answer = front.raw(&burst).await;
    assert_eq!(status_lines(&answer), ["HTTP/1.1 200"; 6], "{answer}");
    assert!(answer.ends_with("ok"), "the last answer is whole: {answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let order: Vec<String> = front
        .backend
        .received()
        .iter()
        .filter(|r| r.path().starts_with("/echo/p"))
        .map(|r| r.path().to_string())
        .collect();
    assert_eq!(
        order,
        [
            "/echo/p1", "/echo/p2", "/echo/p3", "/echo/p4", "/echo/p5", "/echo/p6"
        ]
    );
    assert_eq!(front.received("/echo/p2").values("x-two"), ["a", "b"]);
    assert_eq!(front.received("/echo/p4").body, b"hello");

    // A head that arrives a few bytes at a time is read whole.
    let mut stream = tokio::net::TcpStream::connect(front.node.address())
        .await
        .expect("connect");
    for piece in get("trickled", "Connection: close\r\n").as_bytes().chunks(7) {
        stream.write_all(piece).await.expect("write");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let answer = raw_request(&mut stream, b"").await.expect("answer");
    assert_eq!(status_of(&answer), 200, "{answer}");

    // An HTTP/1.0 client gets an HTTP/1.0 answer; an oversized head 431, a
    // malformed one 400.
    let answer = front
        .raw(&format!("GET /prod/echo/old HTTP/1.0\r\nHost: {host}\r\n\r\n"))
        .await;
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    let huge = format!(
        "GET /prod/echo/huge HTTP/1.1\r\nHost: {host}\r\n{}\r\n",
        "X-Filler: 0123456789012345678901234567890123456789\r\n".repeat(1700)
    );
    assert_eq!(status_of(&front.raw(&huge).await), 431);
    assert_eq!(
        status_of(&front.raw("GET /prod/echo/x HTTP/1.1\r\nHost front\r\n\r\n").await),
        400
    );
    assert_eq!(
        status_of(
            &front
                .raw(&format!(
                    "GET /prod/echo/x HTTP/1.1\r\nHost: {host}\r\nX: \x01\r\n\r\n"
                ))
                .await
        ),
        400
    );
    // An absolute-form target behind an origin-form one on the same
    // connection is routed on its own authority.
    let answer = front
        .raw(&format!(
            "{}GET http://{host}/prod/echo/absolute HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
            get("before", "")
        ))
        .await;
    assert_eq!(status_lines(&answer), ["HTTP/1.1 200"; 2], "{answer}");
    front.received("/echo/absolute");
}

#[tokio::test]
async fn an_answer_cut_after_its_head_is_logged_when_it_ends_with_the_bytes_sent_and_why() {
    let _serial = serial().await;
    let front = Front::start(&["--body-read-timeout-s=1"]).await;
    let host = front.authority();
    let line_for = |path: &'static str| {
        let front = &front;
        async move {
            pylon_tests::eventually(
                &format!("the access-log line of {path}"),
                Duration::from_secs(5),
                || async { front.access_log().into_iter().find(|line| line["path"] == path) },
            )
            .await
        }
    };

    // A backend silent mid-body past the route's 500 ms: the client's
    // answer is cut, and the line says so once it ends.
    let answer = front
        .raw(&format!("GET /prod/stalls HTTP/1.1\r\nHost: {host}\r\n\r\n"))
        .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(
        answer.ends_with("xxxxxxxxxx"),
        "10 bytes, then the close: {answer}"
    );
    let line = line_for("/prod/stalls").await;
    assert_eq!(line["status"], 200, "the status the client got: {line}");
    assert_eq!(line["responseLength"], 10, "the bytes it got: {line}");
    assert_eq!(line["errorType"], "INTEGRATION_TIMEOUT", "{line}");
    assert!(
        line["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("500 ms")),
        "{line}"
    );

    // A body whose framing breaks right behind its first chunk: the
    // client still gets the head and that chunk, then the close.
    let answer = front
        .raw(&format!("GET /prod/breaks HTTP/1.1\r\nHost: {host}\r\n\r\n"))
        .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(
        answer.ends_with("5\r\nhello\r\n"),
        "never ended as if whole: {answer}"
    );
    let line = line_for("/prod/breaks").await;
    assert_eq!(line["responseLength"], 5, "{line}");
    assert_eq!(line["errorType"], "INTEGRATION_FAILURE", "{line}");

    // The backend answers before reading the upload, and the upload stalls
    // past the body-read timeout: the cut is the client's, never an
    // integration failure.
    let upload =
        format!("POST /prod/early HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100\r\n\r\n0123456789");
    let answer = raw_exchange(front.node.address(), upload.as_bytes(), Duration::from_secs(5))
        .await
        .expect("raw exchange");
    assert!(
        answer.ends_with("5\r\nhello\r\n"),
        "cut after its first chunk: {answer}"
    );
    let line = line_for("/prod/early").await;
    assert_eq!(line["status"], 200, "{line}");
    assert!(line["errorType"].is_null(), "not the backend's failure: {line}");
    assert!(
        line["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("the client's request body failed")),
        "{line}"
    );

    // A whole answer that ends with trailers was not left by its client.
    let answer = front
        .raw(&format!(
            "POST /prod/trailers HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
        ))
        .await;
    assert!(answer.ends_with("0\r\n\r\n"), "{answer}");
    let line = line_for("/prod/trailers").await;
    assert_eq!(line["responseLength"], 5, "{line}");
    assert!(line["errorMessage"].is_null(), "{line}");

    // A whole answer has its length and no error.
    let answer = front
        .raw(&format!(
            "GET /prod/echo/whole HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ))
        .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let line = line_for("/prod/echo/whole").await;
    assert_eq!(line["responseLength"], 2, "{line}");
    assert!(
        line["errorType"].is_null() && line["errorMessage"].is_null(),
        "{line}"
    );
}

#[tokio::test]
async fn header_hygiene_holds_in_both_directions() {
    let _serial = serial().await;
    let mut front = Front::start(&[]).await;
    let address = front.node.address();

    // Names with underscores (CGI/WSGI read X_Pylon_Request_Id as
    // X-Pylon-Request-Id) never reach the backend by default.
    let answer = front
        .raw(&format!(
            "GET /prod/echo/underscores HTTP/1.1\r\nHost: {HOST}\r\nX_Pylon_Request_Id: forged\r\nX_Custom: 1\r\nX-Plain: 1\r\nConnection: close\r\n\r\n"
        ))
        .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = front.received("/echo/underscores");
    assert!(
        seen.headers.iter().all(|(n, _)| !n.contains('_')),
        "{:?}",
        seen.headers
    );
    assert_ne!(seen.values("x-pylon-request-id"), ["forged"]);
    assert_eq!(seen.values("x-plain"), ["1"]);

    // A stage may allow them; gateway headers stay out all the same.
    let version = edit_stage(&mut front.admin, "front", "prod", |s| {
        s.allow_underscores_in_headers = true
    })
    .await
    .expect("stage");
    wait_applied(&mut front.admin, version, 1).await;
    front
        .raw(&format!(
            "GET /prod/echo/allowed HTTP/1.1\r\nHost: {HOST}\r\nX_Pylon_Request_Id: forged\r\nX_Custom: 1\r\nX_Forwarded_For: 203.0.113.9\r\nX-Plain: 1\r\nX_Plain: 2\r\nConnection: close\r\n\r\n"
        ))
        .await;
    let seen = front.received("/echo/allowed");
    assert_eq!(seen.values("x_custom"), ["1"]);
    // Nor a spelling a CGI backend would read as one the gateway wrote
    // (X-Forwarded-For) or as another the request carries (X-Plain).
    for twin in ["x_pylon_request_id", "x_forwarded_for", "x_plain"] {
        assert!(seen.values(twin).is_empty(), "{twin}: {:?}", seen.headers);
    }
    assert_eq!(seen.values("x-plain"), ["1"]);

    // A GET body of no declared length reaches the backend, with one.
    let answer = front
        .raw(&format!(
            "GET /prod/echo/fat HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nbody\r\n0\r\n\r\n"
        ))
        .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = front.received("/echo/fat");
    assert_eq!(
        (seen.body.as_slice(), seen.values("content-length")),
        (&b"body"[..], vec!["4"])
    );

    // HTTP/2 cookie fields reach an HTTP/1.1 backend as one line (RFC 9113 §8.2.3).
    let (status, _, _) = h2_request(
        address,
        &front.authority(),
        "/prod/echo/cookies",
        &[("cookie", "a=1"), ("cookie", "b=2")],
    )
    .await
    .expect("h2 request");
    assert_eq!(status, 200);
    assert_eq!(front.received("/echo/cookies").values("cookie"), ["a=1; b=2"]);

    // A response mapping may not make a status that breaks the connection.
    let reply = HttpClient::default()
        .get(address, HOST, "/prod/status101")
        .await
        .expect("reply");
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert_eq!(reply.header("x-pylon-error-type"), "API_CONFIGURATION_ERROR");
    for (field, route) in [
        (
            "routes[0].response_parameters[\"overwrite:statuscode\"]",
            json!({"method": "GET", "path": "/x", "integration": {"type": "MOCK"},
                   "responseParameters": {"overwrite:statuscode": "101"}}),
        ),
        (
            "routes[0].integration.mock.status_code",
            json!({"method": "GET", "path": "/x", "integration": {"type": "MOCK", "mock": {"statusCode": 101}}}),
        ),
        // Fields that would have no effect are refused too.
        (
            "routes[0].integration.timeout_ms",
            json!({"method": "GET", "path": "/x", "integration": {"type": "MOCK", "timeoutMs": 500}}),
        ),
        (
            "routes[0].integration.uri",
            json!({"method": "GET", "path": "/x/{id}",
                   "integration": {"type": "HTTP_PROXY", "uri": "http://127.0.0.1:9/{nosuch}"}}),
        ),
        (
            "routes[0].integration.uri",
            json!({"method": "GET", "path": "/x/{id}",
                   "integration": {"type": "HTTP_PROXY", "uri": "http://127.0.0.1:9/x?id={id}"}}),
        ),
    ] {
        let api: Api =
            serde_json::from_value(json!({"name": "informational", "routes": [route]})).expect("api");
        let refused = front
            .admin
            .create_api(CreateApiRequest { api: Some(api) })
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().contains(field),
            "{field}: {}",
            refused.message()
        );
    }
}

#[tokio::test]
async fn the_host_a_backend_is_told_is_the_one_the_request_was_routed_on() {
    let _serial = serial().await;
    let front = Front::start(&[]).await;
    let address = front.node.address();
    let calls = || front.backend.received().len();

    // Two Host lines, or none on HTTP/1.1: 400, and the backend hears nothing.
    let before = calls();
    let answer = front
        .raw(&format!(
            "GET /prod/echo/two HTTP/1.1\r\nHost: {HOST}\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
        ))
        .await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    let answer = front
        .raw(&format!(
            "GET http://{}/prod/echo/none HTTP/1.1\r\nConnection: close\r\n\r\n",
            front.authority()
        ))
        .await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    // A port that is not digits would reach backends as X-Forwarded-Host.
    for host in [
        "front.localhost:evil.com",
        "front.localhost:99999",
        "front.localhost:+1",
    ] {
        let answer = front
            .raw(&format!(
                "GET /prod/echo/port HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            ))
            .await;
        assert_eq!(status_of(&answer), 400, "{host}: {answer}");
    }
    assert_eq!(calls(), before);

    // An absolute-form target routes, and X-Forwarded-Host names its
    // authority, not the Host line beside it (RFC 9112 §3.2.2).
    let answer = front
        .raw(&format!(
            "GET http://{}/prod/echo/absolute HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
            front.authority()
        ))
        .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(
        front.received("/echo/absolute").values("x-forwarded-host"),
        [front.authority()]
    );

    // HTTP/2: a host field that disagrees with :authority is malformed
    // (RFC 9113 §8.3.1); one that agrees is fine.
    let (status, _, _) = h2_request(
        address,
        &front.authority(),
        "/prod/echo/h2",
        &[("host", "evil.example")],
    )
    .await
    .expect("h2");
    assert_eq!(status, 400);
    let (status, _, _) = h2_request(
        address,
        &front.authority(),
        "/prod/echo/h2",
        &[("host", &front.authority())],
    )
    .await
    .expect("h2");
    assert_eq!(status, 200);
    assert_eq!(
        front.received("/echo/h2").values("x-forwarded-host"),
        [front.authority()]
    );
}

/// Whether the peer closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn every_connection_state_has_a_deadline() {
    let _serial = serial().await;
    let cluster = Cluster::start(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = [cluster.nodes[0].endpoint()];
    // 256 file descriptors; 300 connections that never send a request.
    let node = DataPlaneNode::start_with_open_files(
        dir.path(),
        "dp-deadlines",
        &endpoint,
        &[
            "--first-byte-timeout-s=1",
            "--keepalive-timeout-s=2",
            "--http2-idle-timeout-s=2",
        ],
        256,
    );
    let limited = DataPlaneNode::start(dir.path(), "dp-limited", &endpoint, &["--max-connections=10"]);
    let mut admin = cluster.nodes[0].admin().await.expect("admin");
    deploy_serving(
        &mut admin,
        crate::support::mock_api("still", "{}"),
        "prod",
        &[],
        2,
    )
    .await;
    let address = node.address();
    let client = HttpClient::default();

    let mut silent = Vec::new();
    for i in 0..300 {
        let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
        if i % 2 == 1 {
            // Half an HTTP/2 preface.
            stream.write_all(b"PRI * HTTP/2.0\r\n\r\n").await.expect("write");
        }
        silent.push(stream);
    }
    // A legitimate client is served within seconds, not never.
    let started = std::time::Instant::now();
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.get(address, "still.localhost", "/prod/items"),
    )
    .await
    .expect("served while 300 silent connections wait")
    .expect("reply");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    for stream in &mut silent {
        assert!(
            closed_within(stream, Duration::from_secs(5)).await,
            "a silent connection stayed open"
        );
    }
    drop(silent);

    // Keep-alive: an idle HTTP/1.1 connection is closed after its idle time.
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let answer = raw_request(
        &mut stream,
        b"GET /prod/items HTTP/1.1\r\nHost: still.localhost\r\n\r\n",
    )
    .await
    .expect("answer");
    assert_eq!(status_of(&answer), 200, "{answer}");
    let idle = std::time::Instant::now();
    assert!(
        closed_within(&mut stream, Duration::from_secs(5)).await,
        "keep-alive without end"
    );
    assert!(
        idle.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        idle.elapsed()
    );

    // HTTP/2: an idle connection is sent away (GOAWAY) after its idle time.
    let tcp = tokio::net::TcpStream::connect(address).await.expect("connect");
    let (h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let mut h2 = h2.ready().await.expect("ready");
    let request = http::Request::get("http://still.localhost/prod/items")
        .body(())
        .expect("request");
    let (response, _) = h2.send_request(request, true).expect("send");
    assert_eq!(response.await.expect("response").status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(6), connection).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection stayed open");

    // The node's connection limit: beyond it, connections are closed at once.
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(
            tokio::net::TcpStream::connect(limited.address())
                .await
                .expect("connect"),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = tokio::net::TcpStream::connect(limited.address())
        .await
        .expect("connect");
    assert!(
        closed_within(&mut extra, Duration::from_secs(1)).await,
        "the 11th connection was kept"
    );
    for stream in &mut held {
        assert!(
            !closed_within(stream, Duration::from_millis(50)).await,
            "a connection within the limit was closed"
        );
    }
    drop(held);
    pylon_tests::eventually(
        "the limited node to serve again",
        Duration::from_secs(5),
        || async {
            let reply = client
                .get(limited.address(), "still.localhost", "/prod/items")
                .await
                .ok()?;
            (reply.status == 200).then_some(())
        },
    )
    .await;
}

/// A small seeded generator (xorshift64*): the fuzz test prints its seed,
/// and `PYLON_FUZZ_SEED` replays a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// One generated request: its bytes, what a backend must have received as
/// the body if the answer is 2xx, and whether any 2xx is wrong.
struct Case {
    bytes: Vec<u8>,
    body: Vec<u8>,
    must_fail: bool,
    /// The X-Forwarded-Host a backend must be told.
    authority: String,
    /// Headers a backend must never see (hop-by-hop ones the client sent).
    hop_by_hop: Vec<&'static str>,
    /// The body is shorter than declared: the client half-closes.
    cut_short: bool,
}

fn generate(rng: &mut Rng, i: usize, port: u16) -> Case {
    let path = format!("/prod/echo/fuzz{i}");
    let normal = format!("{HOST}:{port}");
    let mut must_fail = false;
    let mut lines: Vec<String> = Vec::new();
    let (target, authority) = match rng.below(8) {
        0 => {
            // Absolute form: the target's authority wins over Host.
            lines.push("Host: evil.example".into());
            (format!("http://{normal}{path}"), normal.clone())
        }
        1 => {
            lines.push(format!("Host: {normal}"));
            lines.push("Host: evil.example".into());
            must_fail = true;
            (path.clone(), normal.clone())
        }
        2 => {
            must_fail = true;
            (path.clone(), normal.clone())
        }
        3 => {
            let shouted = format!("FRONT.LOCALHOST:{port}");
            lines.push(format!("HOST: {shouted}"));
            (path.clone(), shouted)
        }
        _ => {
            lines.push(format!("Host: {normal}"));
            (path.clone(), normal.clone())
        }
    };
    let pool: [(&str, &str); 16] = [
        ("X-Pylon-Request-Id", "forged"),
        ("x-pylon-principal-id", "admin"),
        ("X_Pylon_Request_Id", "forged"),
        ("x_pylon_stage", "evil"),
        ("X_Custom", "1"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("Forwarded", "for=6.6.6.6;host=evil.example"),
        ("Connection", "X-Secret"),
        ("X-Secret", "hop"),
        ("Cookie", "a=1"),
        ("Cookie", "b=2"),
        ("Proxy-Authorization", "Basic eDp5"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),
    ];
    let mut hop_by_hop = vec!["proxy-authorization", "keep-alive", "te", "upgrade", "forwarded"];
    for (name, value) in pool {
        if rng.chance(30) {
            lines.push(format!("{name}: {value}"));
            if value == "X-Secret" {
                // Named by Connection: hop-by-hop for this request.
                hop_by_hop.push("x-secret");
            }
        }
    }
    let body: Vec<u8> = (0..rng.below(200))
        .map(|_| b'a' + (rng.next() % 26) as u8)
        .collect();
    let chunked = |body: &[u8]| {
        let mut out = Vec::new();
        for piece in body.chunks(37) {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    };
    let n = body.len();
    let mut cut_short = false;
    let (framing, payload, body): (Vec<String>, Vec<u8>, Vec<u8>) = match rng.below(10) {
        0 => (vec![], vec![], vec![]),
        1 => (vec![format!("Content-Length: {n}")], body.clone(), body),
        2 => (
            vec![format!("Content-Length: {n}"), format!("Content-Length: {n}")],
            body.clone(),
            body,
        ),
        3 => {
            must_fail = true;
            (
                vec![
                    format!("Content-Length: {n}"),
                    format!("Content-Length: {}", n + 1),
                ],
                body.clone(),
                body,
            )
        }
        4 => (vec!["Transfer-Encoding: chunked".into()], chunked(&body), body),
        5 => (
            vec![
                "Transfer-Encoding: chunked".into(),
                format!("Content-Length: {}", n / 2),
            ],
            chunked(&body),
            body,
        ),
        6 => {
            must_fail = true;
            (
                vec!["Transfer-Encoding: gzip, chunked".into()],
                chunked(&body),
                body,
            )
        }
        7 => {
            must_fail = true;
            (
                vec!["Transfer-Encoding: chunked".into()],
                b"zz\r\nhello\r\n0\r\n\r\n".to_vec(),
                body,
            )
        }
        8 => {
            must_fail = true;
            cut_short = true;
            (vec![format!("Content-Length: {}", n + 10)], body.clone(), body)
        }
        _ => {
            must_fail = true;
            (vec![format!("Content-Length: -{n}")], body.clone(), body)
        }
    };
    lines.extend(framing);
    lines.push("Connection: close".into());
    // Header order is the client's to choose.
    for j in (1..lines.len()).rev() {
        lines.swap(j, rng.below(j + 1));
    }
    let method = if payload.is_empty() { "GET" } else { "POST" };
    let mut bytes = format!("{method} {target} HTTP/1.1\r\n{}\r\n\r\n", lines.join("\r\n")).into_bytes();
    bytes.extend_from_slice(&payload);
    Case {
        bytes,
        body,
        must_fail,
        authority,
        hop_by_hop,
        cut_short,
    }
}

#[tokio::test]
async fn a_backend_never_sees_forged_doubled_or_hop_by_hop_headers_nor_a_cut_body_under_2xx() {
    let _serial = serial().await;
    let front = Front::start(&["--body-read-timeout-s=1"]).await;
    let seed = std::env::var("PYLON_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("fuzz seed {seed} (PYLON_FUZZ_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    for i in 0..300 {
        let case = generate(&mut rng, i, front.node.port);
        let mut stream = tokio::net::TcpStream::connect(front.node.address())
            .await
            .expect("connect");
        stream.write_all(&case.bytes).await.expect("write");
        if case.cut_short {
            // Half-close: the body ends short of its length.
            let _ = stream.shutdown().await;
        }
        let answer = raw_request(&mut stream, b"").await.unwrap_or_default();
        let request = String::from_utf8_lossy(&case.bytes);
        let context = format!("seed {seed}, case {i}:\n{request}\n--- answer:\n{answer}");
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        assert!(status != 0, "every request gets an answer; {context}");
        assert!(
            ![500, 502, 503, 504].contains(&status),
            "a client's request is never a backend failure; {context}"
        );
        let path = format!("/echo/fuzz{i}");
        let received: Vec<RawRequest> = front
            .backend
            .received()
            .into_iter()
            .filter(|r| r.path().ends_with(&path))
            .collect();
        if (200..300).contains(&status) {
            assert!(!case.must_fail, "accepted a malformed request; {context}");
            assert_eq!(received.len(), 1, "{context}");
        }
        for seen in &received {
            let context = format!("{context}\n--- backend saw:\n{:?}", seen.headers);
            assert!(seen.values("host").len() <= 1, "{context}");
            assert_eq!(
                seen.values("x-forwarded-host"),
                [case.authority.as_str()],
                "{context}"
            );
            assert!(seen.headers.iter().all(|(n, _)| !n.contains('_')), "{context}");
            for (name, value) in &seen.headers {
                let name = name.to_ascii_lowercase();
                assert!(
                    !name.starts_with("x-pylon-") || (name == "x-pylon-request-id" && value != "forged"),
                    "{context}"
                );
                assert!(
                    !case.hop_by_hop.contains(&name.as_str()),
                    "hop-by-hop {name} passed; {context}"
                );
            }
            assert!(seen.values("cookie").len() <= 1, "{context}");
            if (200..300).contains(&status) {
                assert_eq!(
                    seen.body, case.body,
                    "a body cut or changed under a 2xx; {context}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_client_that_does_not_take_its_answer_loses_the_connection() {
    let _serial = serial().await;
    // (A short header timeout also makes the node look at stalled streams often.)
    let front = Front::start(&["--send-timeout-s=1", "--header-read-timeout-s=1"]).await;
    // HTTP/1.1: the socket's buffers fill and the write stalls.
    let mut stream = tokio::net::TcpStream::connect(front.node.address())
        .await
        .expect("connect");
    stream
        .write_all(format!("GET /prod/big HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut received = 0;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        use tokio::io::AsyncReadExt;
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => received += n,
            Err(_) => panic!("the connection stayed open after {received} bytes"),
        }
    }
    assert!(
        received < BIG,
        "the whole answer arrived: the write never stalled"
    );

    // HTTP/2: a client that never opens its flow-control window.
    let tcp = tokio::net::TcpStream::connect(front.node.address())
        .await
        .expect("connect");
    let (h2, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tcp)
        .await
        .expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let mut h2 = h2.ready().await.expect("ready");
    let request = http::Request::get(format!("http://{}/prod/big", front.authority()))
        .body(())
        .expect("request");
    let (response, _) = h2.send_request(request, true).expect("send");
    let response = response.await.expect("response headers");
    assert_eq!(response.status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(15), connection).await;
    assert!(ended.is_ok(), "a stream that never drains kept its connection");

    // Others are served all along.
    let reply = HttpClient::default()
        .get(front.node.address(), HOST, "/prod/echo/after")
        .await
        .expect("reply");
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn an_answer_the_client_takes_slowly_is_never_cut_by_an_idle_deadline() {
    let _serial = serial().await;
    use tokio::io::AsyncReadExt;
    // HTTP/1.1: the request ends when hyper has the whole body, long
    // before the client takes it; the keep-alive deadline must wait.
    let front = Front::start(&[
        "--keepalive-timeout-s=1",
        "--send-timeout-s=6",
        "--http2-idle-timeout-s=1",
        "--header-read-timeout-s=1",
    ])
    .await;
    // A small receive buffer: most of the body waits in the node.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stream = socket.connect(front.node.address()).await.expect("connect");
    stream
        .write_all(format!("GET /prod/whole HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut received = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let body = |received: &[u8]| {
        let head = received.windows(4).position(|w| w == b"\r\n\r\n");
        head.map_or(0, |at| received.len() - at - 4)
    };
    while body(&received) < HANDED_WHOLE {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
    assert_eq!(
        body(&received),
        HANDED_WHOLE,
        "the answer was cut after the keep-alive time"
    );

    // HTTP/2: a client reading 256 KiB a second goes idle (and is sent a
    // GOAWAY) long before it has the body; it still gets all of it.
    let tcp = tokio::net::TcpStream::connect(front.node.address())
        .await
        .expect("connect");
    let (h2, connection) = h2::client::Builder::new()
        .initial_window_size(64 << 10)
        .handshake::<_, Bytes>(tcp)
        .await
        .expect("h2 handshake");
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.expect("ready");
    let request = http::Request::get(format!("http://{}/prod/whole", front.authority()))
        .body(())
        .expect("request");
    let (response, _) = h2.send_request(request, true).expect("send");
    let mut body = response.await.expect("response headers").into_body();
    let started = std::time::Instant::now();
    let mut taken = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the stream was not cut");
        taken += chunk.len();
        tokio::time::sleep(Duration::from_millis(chunk.len() as u64 * 1000 / (256 << 10))).await;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    assert_eq!(taken, HANDED_WHOLE, "the body ended early");
    assert!(
        started.elapsed() > Duration::from_secs(4),
        "the client read slowly, past the idle and header times"
    );
}
