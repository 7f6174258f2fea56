//! Hostile clients for the `abuse` scenario: connections that hold the server's resources the
//! cheap way. They come as remote clients through a load balancer would: from loopback
//! addresses 127.0.0.128 and up (the server is run with `trusted_proxies = 127.0.0.128/25`),
//! each connection opening with a PROXY header that names a client in 203.0.113.0/24 (a
//! documentation range, only ever named, never contacted), `per_address` connections per
//! named client. So the server sees anonymous remote callers, as it would on a network, while
//! the pilots on 127.0.0.1 are the local operator. Every loop stops at `stop`; every
//! connection is bounded by the server's own timeouts and reopened when the server closes it.
//!
//! Kinds, in turn: a slow body (a promised 100 kB, one byte every 5 s), an idle connection
//! (nothing sent), a slow head (one header byte every 2 s). Beside them, one loop posts
//! compressed bombs (`{"a":[0,0,...]}`, 120 MiB expanded) at `bomb_rate` a second and one
//! floods odd requests (percent-spelled method names, unknown methods, garbage) at
//! `flood_rate` a second.

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

/// The `n`th named client and the balancer address it comes through.
fn client_of(n: usize) -> (IpAddr, [u8; 4]) {
    let k = (n % 120) as u8;
    (IpAddr::from([127, 0, 0, 128 + k]), [203, 0, 113, 1 + k])
}

/// A connection through the "balancer", its PROXY header sent.
async fn connect_as(n: usize, server: SocketAddr) -> Option<TcpStream> {
    let (source, named) = client_of(n);
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(source, 0)).ok()?;
    let mut stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(server))
        .await
        .ok()?
        .ok()?;
    let [a, b, c, d] = named;
    let header = format!(
        "PROXY TCP4 {a}.{b}.{c}.{d} {} 40000 {}\r\n",
        server.ip(),
        server.port()
    );
    stream.write_all(header.as_bytes()).await.ok()?;
    Some(stream)
}

/// One request on a fresh connection as client `n`; the answer is read and dropped.
async fn request_as(n: usize, server: SocketAddr, request: &[u8]) {
    let Some(mut stream) = connect_as(n, server).await else {
        return;
    };
    if stream.write_all(request).await.is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    let read_all = async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read_all).await;
}

/// One hostile connection slot: opens, misbehaves until the server closes it, reopens.
async fn slot(
    kind: usize,
    client: usize,
    server: SocketAddr,
    stop: Arc<AtomicBool>,
    counts: Arc<AbuseCounts>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Some(mut stream) = connect_as(client, server).await else {
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

/// Starts the hostile side: `connections` slots, `per_address` per named client, plus one
/// bomb loop and one flood loop at their rates.
pub fn start(
    server: SocketAddr,
    connections: usize,
    per_address: usize,
    bomb_rate: f64,
    flood_rate: f64,
    stop: Arc<AtomicBool>,
    counts: Arc<AbuseCounts>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let per_address = per_address.max(1);
    let mut handles: Vec<_> = (0..connections)
        .map(|n| {
            tokio::spawn(slot(
                n,
                n / per_address,
                server,
                stop.clone(),
                counts.clone(),
            ))
        })
        .collect();
    // The loops below come as a client of their own, past the slots' clients.
    let own = connections / per_address + 1;
    handles.push({
        let (stop, counts) = (stop.clone(), counts.clone());
        tokio::spawn(async move {
            let bomb = bomb();
            let mut round = 0usize;
            while !stop.load(Ordering::Relaxed) && bomb_rate > 0.0 {
                let path = ["/server/panda/getStatus", "/api/v1/job/kill"][round % 2];
                let mut request = format!(
                    "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    bomb.len()
                )
                .into_bytes();
                request.extend_from_slice(&bomb);
                request_as(own, server, &request).await;
                counts.bombs.fetch_add(1, Ordering::Relaxed);
                round += 1;
                tokio::time::sleep(Duration::from_secs_f64(1.0 / bomb_rate)).await;
            }
        })
    });
    handles.push(tokio::spawn(async move {
        let mut n: u32 = 0;
        let pause = Duration::from_secs_f64(2.0 / flood_rate.max(0.001));
        while !stop.load(Ordering::Relaxed) && flood_rate > 0.0 {
            n = n.wrapping_add(1);
            let spelled: String = "getStatus"
                .chars()
                .enumerate()
                .map(|(i, c)| match n & (1 << (i % 9)) {
                    0 => c.to_string(),
                    _ => format!("%{:02X}", c as u32),
                })
                .collect();
            let odd = format!(
                "GET /server/panda/{spelled}?ids={n} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            );
            request_as(own + 1, server, odd.as_bytes()).await;
            let garbage = format!(
                "X{n} /api/v1/x{n}/y HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\
                 Connection: close\r\n\r\ngarbage"
            );
            request_as(own + 1, server, garbage.as_bytes()).await;
            counts.floods.fetch_add(2, Ordering::Relaxed);
            tokio::time::sleep(pause).await;
        }
    }));
    handles
}
