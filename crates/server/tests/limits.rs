//! What an anonymous or hostile client can cost the server, each bound as a test that failed on
//! 12ce1bb: compressed bombs, slow bodies from hundreds of connections, idle connections and
//! slow heads, the per-peer cap, text/plain bodies on `/api/v1`, metric labels, long ID lists,
//! out-of-range integers and NUL bytes on both backends, and symbolic links out of `cache_dir`.
//!
//! Hostile connections come from 127.0.0.2 and up, so the per-peer cap on them leaves the
//! well-behaved client on 127.0.0.1 alone.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{
    api_client, assert_refused, db_env, envelope, get_text, gzip, http, submit, Server, Site,
    Stack, TestJob,
};
use panda_store::testing::{backends, TestDb};
use panda_store::Backend;
use serde_json::{json, Value as Json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A server with local mode off (a configuration file), so loopback callers are anonymous;
/// on SQLite, with `extra` settings. Fields drop in order: the server stops first.
struct AnonymousServer {
    server: Server,
    _site: Site,
    _db: TestDb,
}

fn anonymous_server(extra: &[(&str, &str)]) -> AnonymousServer {
    let db = TestDb::new(Backend::Sqlite);
    let site = Site::new();
    let mut env = db_env(&db);
    env.extend(site.env());
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let cfg = site.dir.path().join("panda_server.cfg");
    std::fs::write(&cfg, "[server]\nbind_address = 127.0.0.1\n").expect("cfg");
    let server = Server::start(&["--config", &cfg.display().to_string()], &env);
    AnonymousServer {
        server,
        _site: site,
        _db: db,
    }
}

/// The server process's peak resident memory, in kB.
fn peak_rss_kb(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// `{"a":[0,0,...]}` of about `mib` MiB, gzipped.
fn bomb(mib: usize) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(b"{\"a\":[").expect("write");
    let chunk = "0,".repeat(512 * 1024);
    for _ in 0..mib {
        encoder.write_all(chunk.as_bytes()).expect("write");
    }
    encoder.write_all(b"0]}").expect("write");
    encoder.finish().expect("gzip")
}

fn socket_addr(server: &Server) -> SocketAddr {
    server
        .base_url
        .trim_start_matches("http://")
        .parse()
        .expect("address")
}

/// A TCP connection to the server from `source` (a loopback address of its own).
async fn connect_from(source: IpAddr, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(source, 0)).expect("bind");
    socket.connect(server).await.expect("connect")
}

fn hostile(n: usize) -> IpAddr {
    IpAddr::from([127, 0, 0, 2 + (n % 4) as u8])
}

/// Whether the server closes `stream` within `within` (EOF or a reset), reading what it sends.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&seen).into_owned()),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// isAlive from 127.0.0.1, timed.
async fn alive_in(client: &reqwest::Client, server: &Server) -> Duration {
    let started = Instant::now();
    let text = client
        .get(server.url("/server/panda/isAlive"))
        .send()
        .await
        .expect("isAlive")
        .text()
        .await
        .expect("text");
    assert_eq!(text, "alive=yes");
    started.elapsed()
}

#[tokio::test]
async fn compressed_bombs_cost_the_server_little() {
    let anonymous = anonymous_server(&[]);
    let server = &anonymous.server;
    let client = http();
    let bomb = bomb(120);
    assert!(bomb.len() < 1024 * 1024, "the bomb is {} bytes", bomb.len());
    // A function without arguments reads no body at all.
    let alive = envelope(
        client
            .post(server.url("/api/v1/system/is_alive"))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .body(bomb.clone()),
    )
    .await;
    assert_eq!(alive["success"], true, "{alive}");
    // A secure function refuses an anonymous caller before reading the body.
    let refused = envelope(
        client
            .post(server.url("/api/v1/job/kill"))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .body(bomb.clone()),
    )
    .await;
    assert_eq!(
        refused["message"], "SSL secure connection is required",
        "{refused}"
    );
    // Three at once to the legacy dispatcher, which reads the body to find its arguments: an
    // anonymous caller's body may expand to 1 MiB, no more.
    let calls = (0..3).map(|i| {
        let path = match i {
            0 => "/server/panda/checkJobStatus",
            1 => "/server/panda/getStatus",
            _ => "/server/panda/updateJob",
        };
        client
            .post(server.url(path))
            .header("Content-Type", "application/json")
            .body(bomb.clone())
            .send()
    });
    for reply in futures_join(calls).await {
        let reply = reply.expect("reply");
        let status = reply.status().as_u16();
        let text = reply.text().await.expect("text");
        assert!(
            status == 413 || text.contains("exceeds the limit"),
            "{status} {text}"
        );
    }
    let peak = peak_rss_kb(server);
    assert!(peak < 200_000, "peak RSS {peak} kB after anonymous bombs");
}

#[tokio::test]
async fn a_verified_caller_cannot_expand_a_body_into_gigabytes() {
    // Local mode: the loopback caller is the operator, with the full 128 MiB body limit.
    let stack = Stack::start(Backend::Sqlite, &[], &[]).await;
    let reply = envelope(
        api_client()
            .post(stack.server.url("/api/v1/job/kill"))
            .header("Content-Type", "application/json")
            .body(bomb(120)),
    )
    .await;
    assert_refused(&reply, "more than 2000000 values");
    let peak = peak_rss_kb(&stack.server);
    assert!(peak < 600_000, "peak RSS {peak} kB after a 120 MiB body");
}

/// Runs the futures together, in order of their answers' positions.
async fn futures_join<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_hold_connections_not_workers() {
    let anonymous = anonymous_server(&[
        ("PANDA_MAX_WORKERS", "4"),
        ("PANDA_BODY_READ_TIMEOUT", "4"),
        ("PANDA_HEADER_READ_TIMEOUT", "30"),
    ]);
    let server = &anonymous.server;
    let address = socket_addr(server);
    // 300 uploads that promise 100 bytes and send one.
    let mut slow = Vec::new();
    for n in 0..300 {
        let mut stream = connect_from(hostile(n), address).await;
        stream
            .write_all(
                b"POST /server/panda/getStatus HTTP/1.1\r\nHost: x\r\nContent-Type: \
                  application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ni",
            )
            .await
            .expect("write");
        slow.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = http();
    for _ in 0..5 {
        let took = alive_in(&client, server).await;
        assert!(took < Duration::from_secs(2), "isAlive took {took:?}");
    }
    // A call that needs a worker answers too.
    let started = Instant::now();
    let reply = client
        .get(server.url("/server/panda/checkJobStatus?ids=1"))
        .send()
        .await
        .expect("checkJobStatus");
    assert_eq!(reply.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    // The slow ones are answered 408 once their time is up.
    let answer = closed_within(&mut slow[0], Duration::from_secs(10))
        .await
        .expect("the slow body was never cut off");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_slow_heads_are_closed_and_peers_capped() {
    let anonymous = anonymous_server(&[
        ("PANDA_KEEPALIVE_TIMEOUT", "1"),
        ("PANDA_HEADER_READ_TIMEOUT", "2"),
        ("PANDA_MAX_CONNECTIONS_PER_PEER", "50"),
    ]);
    let server = &anonymous.server;
    let address = socket_addr(server);
    // 50 idle connections from one address are held; the 51st is turned away at once. (It
    // follows the 50 straight away: were it to come later than the header timeout, the first
    // ones would be gone and it would be within the cap.)
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(connect_from(hostile(0), address).await);
    }
    let mut extra = connect_from(hostile(0), address).await;
    let refused = closed_within(&mut extra, Duration::from_secs(2))
        .await
        .expect("the connection over the cap stayed open");
    assert!(
        refused.starts_with("HTTP/1.1 503") && refused.contains("127.0.0.2"),
        "{refused}"
    );
    // 150 more from three other addresses, 50 each: all held, none answered.
    for n in 1..4 {
        for _ in 0..50 {
            idle.push(connect_from(hostile(n), address).await);
        }
    }
    // 127.0.0.1 is not affected.
    let client = http();
    let took = alive_in(&client, server).await;
    assert!(took < Duration::from_secs(2), "isAlive took {took:?}");
    // A head that trickles in is cut off at the header timeout.
    let fresh = |last: u8| IpAddr::from([127, 0, 0, last]);
    let mut trickle = connect_from(fresh(20), address).await;
    let started = Instant::now();
    let writer = async {
        for byte in b"GET /server/panda/isAlive HTTP/1.1\r\nHost: x\r\n" {
            if trickle.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(8), writer).await;
    let mut buf = [0u8; 64];
    let gone = matches!(
        tokio::time::timeout(Duration::from_secs(2), trickle.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    );
    assert!(
        gone,
        "a trickling head was kept for {:?}",
        started.elapsed()
    );
    // Every idle connection has been closed by now (header timeout for a first request).
    for stream in &mut idle {
        assert!(
            closed_within(stream, Duration::from_secs(3))
                .await
                .is_some(),
            "an idle connection stayed open"
        );
    }
    // After a request, a kept-alive connection idles for keepalive_timeout only.
    let mut kept = connect_from(fresh(21), address).await;
    kept.write_all(b"GET /server/panda/isAlive HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let answer = closed_within(&mut kept, Duration::from_secs(4))
        .await
        .expect("an idle kept-alive connection stayed open");
    assert!(answer.contains("alive=yes"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn api_v1_reads_arguments_only_from_a_json_content_type() {
    let stack = Stack::start(Backend::Sqlite, &[], &[]).await;
    let client = http();
    let id = submit(&client, &stack.server, &[TestJob::new("victim")]).await[0];
    let body = json!({"job_ids": [id]}).to_string();
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let reply = envelope(
            client
                .post(stack.server.url("/api/v1/job/kill"))
                .header("Content-Type", content_type)
                .header("Accept", "application/json")
                .body(body.clone()),
        )
        .await;
        assert_refused(&reply, "Content-Type: application/json");
    }
    // Query arguments on a non-JSON POST count for nothing either.
    let reply = envelope(
        client
            .post(stack.server.url(&format!("/api/v1/job/kill?job_ids={id}")))
            .header("Content-Type", "text/plain")
            .header("Accept", "application/json"),
    )
    .await;
    assert_eq!(reply["success"], false, "{reply}");
    let status = stack
        .store
        .job_briefs(
            &[id],
            &[panda_core::JobTable::Active, panda_core::JobTable::Defined],
        )
        .await
        .expect("briefs");
    assert_eq!(
        status.get(&id).map(|b| b.status.as_str()),
        Some("activated")
    );
    // The same call as the clients send it works.
    let reply = envelope(
        client
            .post(stack.server.url("/api/v1/job/kill"))
            .header("Accept", "application/json")
            .json(&json!({"job_ids": [id]})),
    )
    .await;
    assert_eq!(reply["success"], true, "{reply}");
}

#[tokio::test]
async fn metric_labels_come_from_a_closed_set() {
    let db = TestDb::new(Backend::Sqlite);
    let server = Server::start(&[], &db_env(&db));
    let metrics_url = server.metrics_url();
    let client = http();
    let size = |url: String| {
        let client = client.clone();
        async move { get_text(&client, url).await.len() }
    };
    // Warm up every label a getStatus call can make.
    client
        .get(server.url("/server/panda/getStatus?ids=1"))
        .send()
        .await
        .expect("getStatus");
    let before = size(metrics_url.clone()).await;
    let name = "getStatus";
    for mask in 0u32..512 {
        let spelled: String = name
            .chars()
            .enumerate()
            .map(|(i, c)| match mask & (1 << i) {
                0 => c.to_string(),
                _ => format!("%{:02X}", c as u32),
            })
            .collect();
        client
            .get(server.url(&format!("/server/panda/{spelled}?ids=1")))
            .send()
            .await
            .expect("getStatus");
        client
            .request(
                reqwest::Method::from_bytes(format!("X{mask}").as_bytes()).expect("method"),
                server.url("/server/panda/isAlive"),
            )
            .send()
            .await
            .expect("odd method");
    }
    let after = size(metrics_url).await;
    assert!(
        after < before + 4096,
        "/metrics grew from {before} to {after} bytes"
    );
}

#[tokio::test]
async fn id_lists_and_column_values_are_checked_before_any_sql() {
    for backend in backends() {
        let stack = Stack::start(backend, &[], &[]).await;
        let client = http();
        let ids: Vec<String> = (1..=6000).map(|i| i.to_string()).collect();
        let reply = client
            .get(
                stack
                    .server
                    .url(&format!("/server/panda/getStatus?ids={}", ids.join("+"))),
            )
            .send()
            .await
            .expect("getStatus");
        assert_eq!(reply.status(), 400, "{backend:?}");
        assert!(reply.text().await.expect("text").contains("limit of 5500"));
        let reply = envelope(
            api_client()
                .post(stack.server.url("/api/v1/job/kill"))
                .json(&json!({"job_ids": (1..=6000).collect::<Vec<i64>>()})),
        )
        .await;
        assert_refused(&reply, "limit of 5500");

        // NUL bytes, which PostgreSQL cannot store, are named before any SQL runs.
        let reply = client
            .post(stack.server.url("/server/panda/getJob"))
            .form(&[("siteName", "TEST\u{0}QUEUE"), ("node", "wn1")])
            .send()
            .await
            .expect("getJob");
        assert_eq!(reply.status(), 400, "{backend:?}");
        assert!(reply.text().await.expect("text").contains("siteName"));
        let reply = envelope(
            api_client()
                .post(stack.server.url("/api/v1/job/set_command"))
                .json(&json!({"job_id": 1, "command": "debug\u{0}"})),
        )
        .await;
        assert_refused(&reply, "'command' contains a NUL byte");

        // A job handed to a pilot, then heartbeats with values no column can hold.
        let id = submit(&client, &stack.server, &[TestJob::new("bounds")]).await[0];
        let got = client
            .post(stack.server.url("/server/panda/getJob"))
            .form(&[("siteName", "TEST_QUEUE"), ("node", "wn1")])
            .send()
            .await
            .expect("getJob")
            .text()
            .await
            .expect("text");
        assert!(got.contains(&format!("PandaID={id}")), "{got}");
        let beat = |extra: Json| {
            let mut fields = json!({"jobId": id, "state": "running", "node": "wn1"});
            if let (Some(map), Json::Object(more)) = (fields.as_object_mut(), extra) {
                map.extend(more);
            }
            client
                .post(stack.server.url("/server/panda/updateJob"))
                .header("Content-Type", "application/json")
                .body(gzip(fields.to_string().as_bytes()))
                .send()
        };
        for (field, bad) in [
            ("exeErrorCode", json!("99999999999")),
            ("coreCount", json!("-3000000000")),
            ("pilotErrorDiag", json!("bad\u{0}byte")),
            ("cpuConversionFactor", json!("1e300")),
        ] {
            let reply = beat(json!({ field: bad })).await.expect("updateJob");
            let status = reply.status().as_u16();
            let text = reply.text().await.expect("text");
            assert_eq!(status, 400, "{backend:?} {field}: {text}");
            let named = match field {
                "coreCount" => "actualCoreCount",
                "cpuConversionFactor" => "cpuConversion",
                other => other,
            };
            assert!(text.contains(named), "{backend:?} {field}: {text}");
        }
        // The job is untouched and the next good heartbeat lands.
        let reply = beat(json!({"coreCount": "8"})).await.expect("updateJob");
        let text = reply.text().await.expect("text");
        assert!(text.contains("StatusCode=0"), "{backend:?}: {text}");
        let briefs = stack
            .store
            .job_briefs(&[id], &[panda_core::JobTable::Active])
            .await
            .expect("briefs");
        assert_eq!(briefs.get(&id).map(|b| b.status.as_str()), Some("running"));
    }
}

#[tokio::test]
async fn static_files_never_lead_out_of_their_directory() {
    let stack = Stack::start(Backend::Sqlite, &[], &[]).await;
    let cache = stack.site.dir.path().join("cache");
    std::fs::write(cache.join("inside.txt"), "inside").expect("file");
    std::os::unix::fs::symlink("/etc/passwd", cache.join("passwd")).expect("symlink");
    std::os::unix::fs::symlink("inside.txt", cache.join("alias.txt")).expect("symlink");
    std::fs::create_dir_all(cache.join("schedconfig")).expect("dir");
    std::os::unix::fs::symlink("/etc/passwd", cache.join("schedconfig/x.json")).expect("symlink");
    let client = http();
    for (path, status) in [
        ("/cache/inside.txt", 200),
        ("/cache/alias.txt", 200),
        ("/cache/passwd", 404),
        ("/cache/%70asswd", 404),
        ("/cache/schedconfig/x.json", 404),
    ] {
        let reply = client
            .get(stack.server.url(path))
            .send()
            .await
            .expect("get");
        assert_eq!(reply.status().as_u16(), status, "{path}");
        if status == 404 {
            assert!(
                !reply.text().await.expect("text").contains("root:"),
                "{path}"
            );
        }
    }
}

/// One request on a fresh connection from 127.0.0.1 that opens with `preamble`; what the
/// server answers before it closes.
async fn raw_request(server: SocketAddr, preamble: &[u8], request: &str) -> String {
    let mut stream = connect_from(IpAddr::from([127, 0, 0, 1]), server).await;
    stream.write_all(preamble).await.expect("write");
    stream.write_all(request.as_bytes()).await.expect("write");
    closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("the server kept the connection open")
}

#[tokio::test]
async fn behind_a_balancer_the_client_is_who_the_proxy_protocol_names() {
    // Local mode, with 127.0.0.1 as the balancer.
    let stack = Stack::start(
        Backend::Sqlite,
        &[],
        &[
            ("PANDA_TRUSTED_PROXIES", "127.0.0.1"),
            ("PANDA_MAX_CONNECTIONS_PER_PEER", "2"),
        ],
    )
    .await;
    let address = socket_addr(&stack.server);
    let attributes = "GET /api/v1/system/get_attributes HTTP/1.1\r\nHost: x\r\n\
                      Accept: application/json\r\nConnection: close\r\n\r\n";
    // A remote client behind the balancer is not the local operator.
    let remote = raw_request(
        address,
        b"PROXY TCP4 192.0.2.9 127.0.0.1 40000 25080\r\n",
        attributes,
    )
    .await;
    assert!(
        remote.contains("SSL secure connection is required"),
        "{remote}"
    );
    // A loopback client named by the balancer is (version 2 header this time).
    let mut v2 = panda_api::proxy_protocol::V2_SIGNATURE.to_vec();
    v2.extend([
        0x21, 0x11, 0, 12, 127, 0, 0, 1, 127, 0, 0, 1, 0x9c, 0x40, 0x63, 0x38,
    ]);
    let local = raw_request(address, &v2, attributes).await;
    assert!(local.contains("\"success\":true"), "{local}");
    // From the balancer's address, a connection without the header is closed unanswered.
    let bare = raw_request(
        address,
        b"",
        "GET /server/panda/isAlive HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(!bare.contains("alive=yes"), "{bare}");
    // The per-peer cap counts the client the balancer names.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from(IpAddr::from([127, 0, 0, 1]), address).await;
        stream
            .write_all(b"PROXY TCP4 192.0.2.50 127.0.0.1 1 2\r\n")
            .await
            .expect("write");
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = raw_request(
        address,
        b"PROXY TCP4 192.0.2.50 127.0.0.1 3 2\r\n",
        "GET /server/panda/isAlive HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(
        third.starts_with("HTTP/1.1 503") && third.contains("192.0.2.50"),
        "{third}"
    );
    let other = raw_request(
        address,
        b"PROXY TCP4 192.0.2.51 127.0.0.1 3 2\r\n",
        "GET /server/panda/isAlive HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(other.contains("alive=yes"), "{other}");
}

#[tokio::test]
async fn refusals_reach_a_client_that_is_still_sending() {
    let anonymous = anonymous_server(&[]);
    let server = &anonymous.server;
    let client = http();
    let body = vec![b'x'; 512 * 1024];
    for _ in 0..5 {
        for (path, token, status) in [
            ("/server/panda/noSuchMethod", None, 403),
            ("/api/v1/job/kill", Some("Bearer not.a.token"), 403),
            ("/server/panda/isAlive", None, 200),
            ("/api/v1/job/kill", None, 200),
        ] {
            let mut request = client
                .post(server.url(path))
                .header("Content-Type", "application/json")
                .body(body.clone());
            if let Some(token) = token {
                request = request.header("Authorization", token);
            }
            let reply = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("{path}: the answer was lost: {e:?}"));
            assert_eq!(reply.status().as_u16(), status, "{path}");
        }
    }
}
