//! Hostile clients for the `abuse` scenario: connections that hold the server's resources the
//! cheap way, from loopback addresses of their own (127.0.0.2 and up, `per_address` each) so the
//! per-peer cap leaves the pilots on 127.0.0.1 alone. Every loop stops at `stop`; every
//! connection is bounded by the server's own timeouts and reopened when the server closes it.
//!
//! Kinds, in turn: a slow body (a promised 100 kB, one byte every 5 s), an idle connection
//! (nothing sent), a slow head (one header byte every 2 s). Beside them, one loop posts
//! compressed bombs (`{"a":[0,0,...]}`, 120 MiB expanded) and one floods odd requests
//! (percent-spelled method names, unknown methods, garbage).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// What the hostile side managed, for the report.
#[derive(Default)]
pub struct AbuseCounts {
    pub connections_opened: AtomicU64,
    pub closed_by_server: AtomicU64,
    pub bombs: AtomicU64,
    pub floods: AtomicU64,
}

async fn connect_from(source: IpAddr, server: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(source, 0)).ok()?;
    tokio::time::timeout(Duration::from_secs(5), socket.connect(server))
        .await
        .ok()?
        .ok()
}

/// One hostile connection slot: opens, misbehaves until the server closes it, reopens.
async fn slot(
    kind: usize,
    source: IpAddr,
    server: SocketAddr,
    stop: Arc<AtomicBool>,
    counts: Arc<AbuseCounts>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Some(mut stream) = connect_from(source, server).await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        counts.connections_opened.fetch_add(1, Ordering::Relaxed);
        let (opening, step, every): (&[u8], &[u8], Duration) = match kind % 3 {
            0 => (
                b"POST /server/panda/getStatus HTTP/1.1\r\nHost: x\r\nContent-Type: \
                  application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n",
                b"i",
                Duration::from_secs(5),
            ),
            1 => (b"", b"", Duration::from_secs(1)),
            _ => (b"", b"G", Duration::from_secs(2)),
        };
        if stream.write_all(opening).await.is_err() {
            continue;
        }
        let mut buf = [0u8; 1024];
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match tokio::time::timeout(every, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    counts.closed_by_server.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(Ok(_)) => {}
                Err(_) => {
                    if !step.is_empty() && stream.write_all(step).await.is_err() {
                        counts.closed_by_server.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }
}

/// `{"a":[0,0,...]}` of 120 MiB, gzipped (about 120 kB).
fn bomb() -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let chunk = "0,".repeat(512 * 1024);
    let _ = encoder.write_all(b"{\"a\":[");
    for _ in 0..120 {
        let _ = encoder.write_all(chunk.as_bytes());
    }
    let _ = encoder.write_all(b"0]}");
    encoder.finish().unwrap_or_default()
}

/// Starts the hostile side: `connections` slots over as many addresses as `per_address`
/// needs, plus one bomb loop and one flood loop.
pub fn start(
    server: SocketAddr,
    connections: usize,
    per_address: usize,
    stop: Arc<AtomicBool>,
    counts: Arc<AbuseCounts>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let per_address = per_address.max(1);
    let mut handles: Vec<_> = (0..connections)
        .map(|n| {
            let last = 2 + (n / per_address).min(250) as u8;
            let source = IpAddr::from([127, 0, 0, last]);
            tokio::spawn(slot(n, source, server, stop.clone(), counts.clone()))
        })
        .collect();
    let base = format!("http://{server}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .local_address(IpAddr::from([127, 0, 0, 251]))
        .build();
    let Ok(client) = client else {
        return handles;
    };
    handles.push({
        let (client, base, stop, counts) =
            (client.clone(), base.clone(), stop.clone(), counts.clone());
        tokio::spawn(async move {
            let bomb = bomb();
            while !stop.load(Ordering::Relaxed) {
                for path in ["/server/panda/getStatus", "/api/v1/job/kill"] {
                    let _ = client
                        .post(format!("{base}{path}"))
                        .header("Content-Type", "application/json")
                        .body(bomb.clone())
                        .send()
                        .await;
                    counts.bombs.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    });
    handles.push(tokio::spawn(async move {
        let mut n: u32 = 0;
        while !stop.load(Ordering::Relaxed) {
            n = n.wrapping_add(1);
            let spelled: String = "getStatus"
                .chars()
                .enumerate()
                .map(|(i, c)| match n & (1 << (i % 9)) {
                    0 => c.to_string(),
                    _ => format!("%{:02X}", c as u32),
                })
                .collect();
            let _ = client
                .get(format!("{base}/server/panda/{spelled}?ids={n}"))
                .send()
                .await;
            if let Ok(method) = reqwest::Method::from_bytes(format!("X{n}").as_bytes()) {
                let _ = client
                    .request(method, format!("{base}/api/v1/x{n}/y"))
                    .body("garbage")
                    .send()
                    .await;
            }
            counts.floods.fetch_add(2, Ordering::Relaxed);
        }
    }));
    handles
}
