//! Accepting connections, for HTTP and HTTPS alike: who the peer is, how many connections it
//! may hold, and how long a connection may sit without doing its part.
//!
//! Policy, after Apache's defaults (`RequestReadTimeout header=20-40,MinRate=500`,
//! `KeepAliveTimeout 5`), each configurable in `panda_server.cfg`:
//! - A connection costs a small task and a socket, never a request worker: workers are taken
//!   only once a request's body has been read (see `panda_api::body`).
//! - The request head must arrive within `header_read_timeout` of its first byte (and a new
//!   connection must send its first byte within that time); between requests a connection
//!   may stay idle for `keepalive_timeout`, then it is closed.
//! - One peer address holds at most `max_connections_per_peer` connections and the server at
//!   most `max_connections`; past either, a new connection gets a 503 (HTTP) or is closed
//!   (HTTPS, before the handshake) at once.
//! - Behind a load balancer the peer is the balancer: a peer listed in `trusted_proxies` must
//!   open with a PROXY protocol header, and the address it names is the client's, for the cap,
//!   local mode and the logs. Headers such as `X-Forwarded-For` are never read.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use openssl::ssl::{Ssl, SslAcceptor};
use openssl::x509::X509;
use panda_api::proxy_protocol;
use panda_api::{ClientCertificate, X509Verifier};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// A network range: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    pub address: IpAddr,
    pub prefix: u8,
}

impl IpRange {
    /// `10.0.0.5`, `10.0.0.0/8` or `2001:db8::/32`.
    pub fn parse(text: &str) -> Option<IpRange> {
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let address = text.parse::<IpAddr>().ok()?;
                (address, if address.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if address.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(IpRange { address, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.address, ip) {
            (IpAddr::V4(range), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(range) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(range), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(range) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The bounds on connections, from configuration.
#[derive(Clone, Debug)]
pub struct ConnectionPolicy {
    pub header_read_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_connections_per_peer: usize,
    pub max_connections: usize,
    /// Peers that must send a PROXY protocol header naming the client.
    pub trusted_proxies: Vec<IpRange>,
}

impl Default for ConnectionPolicy {
    fn default() -> Self {
        ConnectionPolicy {
            header_read_timeout: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(5),
            max_connections_per_peer: 256,
            max_connections: 10_000,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Live connections, in total and by client address.
struct Admission {
    total: Arc<Semaphore>,
    by_peer: Mutex<HashMap<IpAddr, usize>>,
    per_peer: usize,
}

/// A connection's place: given back when the connection ends.
struct Admitted {
    admission: Arc<Admission>,
    peer: IpAddr,
    _total: OwnedSemaphorePermit,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut by_peer) = self.admission.by_peer.lock() {
            if let Some(count) = by_peer.get_mut(&self.peer) {
                *count -= 1;
                if *count == 0 {
                    by_peer.remove(&self.peer);
                }
            }
        }
    }
}

impl Admission {
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admitted, String> {
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| "the server holds its maximum number of connections".to_string())?;
        let mut by_peer = self
            .by_peer
            .lock()
            .map_err(|_| "connection table poisoned".to_string())?;
        let count = by_peer.entry(peer).or_default();
        if *count >= self.per_peer {
            return Err(format!(
                "{peer} holds {} connections, the most one address may hold",
                self.per_peer
            ));
        }
        *count += 1;
        Ok(Admitted {
            admission: self.clone(),
            peer,
            _total: total,
        })
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `stop`; returns once every
/// connection has ended or `drain` has passed after the stop.
pub async fn serve(
    listener: TcpListener,
    tls: Option<(Arc<SslAcceptor>, Option<Arc<X509Verifier>>)>,
    app: Router,
    policy: Arc<ConnectionPolicy>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let admission = Arc::new(Admission {
        total: Arc::new(Semaphore::new(policy.max_connections.max(1))),
        by_peer: Mutex::new(HashMap::new()),
        per_peer: policy.max_connections_per_peer.max(1),
    });
    let listening = Arc::new(Listening {
        tls,
        app,
        policy,
        admission,
    });
    let live = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(connection) => connection,
            Err(e) => {
                // Out of file descriptors, mostly: wait rather than spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (this, stop) = (listening.clone(), stop.clone());
        let live = LiveGuard::new(live.clone());
        // A direct client is admitted here, in the order its connections arrived, so that
        // the one over a cap is the newest; a balancer's client is known only after its
        // PROXY header, in the connection's own task.
        let proxied = listening
            .policy
            .trusted_proxies
            .iter()
            .any(|r| r.contains(peer.ip()));
        let admitted = (!proxied).then(|| listening.admission.admit(peer.ip()));
        tokio::spawn(async move {
            let _live = live;
            if let Err(e) = connection(tcp, peer, admitted, &this, stop).await {
                tracing::debug!(%peer, "connection: {e:#}");
            }
        });
    }
    let deadline = Instant::now() + drain;
    while live.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    fn new(live: Arc<AtomicUsize>) -> LiveGuard {
        live.fetch_add(1, Ordering::Relaxed);
        LiveGuard(live)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads the PROXY header a trusted balancer opens with: the client's address, or the
/// balancer's own for a health check (`LOCAL`/`UNKNOWN`).
async fn read_proxy_header(tcp: &mut TcpStream, peer: SocketAddr) -> anyhow::Result<SocketAddr> {
    let mut first = [0u8; 1];
    tcp.read_exact(&mut first).await?;
    let named = if first[0] == b'P' {
        let mut line = vec![first[0]];
        while !line.ends_with(b"\r\n") {
            anyhow::ensure!(
                line.len() < proxy_protocol::V1_MAX_LINE,
                "PROXY v1 line too long"
            );
            let mut byte = [0u8; 1];
            tcp.read_exact(&mut byte).await?;
            line.push(byte[0]);
        }
        proxy_protocol::parse_v1(&line).map_err(anyhow::Error::msg)?
    } else {
        let mut fixed = [0u8; proxy_protocol::V2_FIXED];
        fixed[0] = first[0];
        tcp.read_exact(&mut fixed[1..]).await?;
        let len = proxy_protocol::v2_body_len(&fixed).map_err(anyhow::Error::msg)?;
        let mut body = vec![0u8; len];
        tcp.read_exact(&mut body).await?;
        proxy_protocol::parse_v2(&fixed, &body).map_err(anyhow::Error::msg)?
    };
    Ok(named.unwrap_or(peer))
}

/// What every connection of one listener shares.
struct Listening {
    tls: Option<(Arc<SslAcceptor>, Option<Arc<X509Verifier>>)>,
    app: Router,
    policy: Arc<ConnectionPolicy>,
    admission: Arc<Admission>,
}

/// One connection: `admitted` is the admission of a direct client, decided at accept; `None`
/// for a trusted balancer's connection, whose client is admitted once its PROXY header names it.
async fn connection(
    mut tcp: TcpStream,
    peer: SocketAddr,
    admitted: Option<Result<Admitted, String>>,
    listening: &Listening,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (policy, admission) = (listening.policy.as_ref(), &listening.admission);
    let (client, admitted) = match admitted {
        Some(admitted) => (peer, admitted),
        None => {
            let client = tokio::time::timeout(
                policy.header_read_timeout,
                read_proxy_header(&mut tcp, peer),
            )
            .await
            .context("PROXY header timed out")?
            .with_context(|| format!("PROXY header from trusted proxy {peer}"))?;
            (client, admission.admit(client.ip()))
        }
    };
    let _admitted = match admitted {
        Ok(admitted) => admitted,
        Err(why) => {
            tracing::warn!(target: "panda::limits", %client, "connection refused: {why}");
            if listening.tls.is_none() {
                let body = format!("ERROR : connection refused: {why}\n");
                let reply = format!(
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\nRetry-After: 5\r\n\r\n{body}",
                    body.len()
                );
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), tcp.write_all(reply.as_bytes()))
                        .await;
            }
            return Ok(());
        }
    };
    let activity = Arc::new(Activity::new());
    let io = Watched {
        inner: tcp,
        activity: activity.clone(),
    };
    let app = listening.app.clone();
    match &listening.tls {
        None => serve_http(io, client, Transport::Plain, app, policy, activity, stop).await,
        Some((acceptor, verifier)) => {
            let ssl = Ssl::new(acceptor.context())?;
            let mut stream = tokio_openssl::SslStream::new(ssl, io)?;
            tokio::time::timeout(HANDSHAKE_TIMEOUT, Pin::new(&mut stream).accept())
                .await
                .context("handshake timed out")?
                .context("handshake")?;
            let certificate = client_certificate(stream.ssl(), verifier.as_deref(), client);
            serve_http(
                stream,
                client,
                Transport::Tls(certificate),
                app,
                policy,
                activity,
                stop,
            )
            .await
        }
    }
}

/// The client certificate of a finished handshake, verified once for the connection.
fn client_certificate(
    ssl: &openssl::ssl::SslRef,
    verifier: Option<&X509Verifier>,
    client: SocketAddr,
) -> Option<ClientCertificate> {
    let mut chain: Vec<X509> = ssl.peer_certificate().into_iter().collect();
    if let Some(rest) = ssl.peer_cert_chain() {
        // On the server side the presented chain does not repeat the leaf.
        chain.extend(rest.iter().map(|c| c.to_owned()));
    }
    if chain.is_empty() {
        return None;
    }
    let verified = match verifier {
        Some(verifier) => verifier.verify(&chain),
        None => Err("client certificates are not accepted: no CA directory is configured".into()),
    };
    if let Err(reason) = &verified {
        tracing::warn!(target: "panda::auth", peer = %client, %reason, "client certificate refused");
    }
    Some(ClientCertificate(Arc::new(verified)))
}

/// How a connection reached us: plain, or TLS with the client certificate it presented.
#[derive(Clone)]
enum Transport {
    Plain,
    Tls(Option<ClientCertificate>),
}

/// Runs HTTP/1.1 or HTTP/2 on one connection, closing it when it idles past its time.
async fn serve_http<I>(
    io: I,
    client: SocketAddr,
    transport: Transport,
    app: Router,
    policy: &ConnectionPolicy,
    activity: Arc<Activity>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let requests = activity.clone();
    let responses = activity.clone();
    let service = app
        .map_request(move |mut request: axum::extract::Request<_>| {
            requests.request_started();
            request.extensions_mut().insert(ConnectInfo(client));
            if let Transport::Tls(certificate) = &transport {
                request
                    .extensions_mut()
                    .insert(panda_api::identity::OverHttps);
                if let Some(certificate) = certificate {
                    request.extensions_mut().insert(certificate.clone());
                }
            }
            request
        })
        .map_response(move |response| {
            responses.request_ended();
            response
        });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's own clock on the head, behind ours: a backstop.
        .header_read_timeout(policy.header_read_timeout * 2);
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    let mut connection = std::pin::pin!(connection);
    loop {
        let deadline = activity.deadline(policy);
        tokio::select! {
            result = connection.as_mut() => {
                return result.map_err(|e| anyhow::anyhow!("{e}"));
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                if let Some(why) = activity.overdue(policy) {
                    tracing::debug!(%client, "connection closed: {why}");
                    return Ok(());
                }
            }
            _ = stopped(&mut stop) => break,
        }
    }
    connection.as_mut().graceful_shutdown();
    connection.await.map_err(|e| anyhow::anyhow!("{e}"))
}

/// Resolves once a stop has been requested (holding no borrow of the channel).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// What a connection has been doing, for its idle and header clocks.
struct Activity {
    base: Instant,
    /// Milliseconds since `base` of the last byte read or written.
    last: AtomicU64,
    /// Milliseconds since `base` (plus one) when bytes of a request head began to arrive with
    /// no request in flight; 0 when none is being read.
    head_since: AtomicU64,
    in_flight: AtomicUsize,
    served: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn read(&self) {
        let now = self.now();
        self.last.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let _ =
                self.head_since
                    .compare_exchange(0, now + 1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.served.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
    }

    fn request_ended(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.last.store(self.now(), Ordering::Relaxed);
    }

    /// When to look again.
    fn deadline(&self, policy: &ConnectionPolicy) -> Instant {
        let at = |ms: u64, after: Duration| self.base + Duration::from_millis(ms) + after;
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Instant::now() + policy.keepalive_timeout.max(Duration::from_secs(1));
        }
        match self.head_since.load(Ordering::Relaxed) {
            0 => at(
                self.last.load(Ordering::Relaxed),
                self.idle_allowance(policy),
            ),
            since => at(since - 1, policy.header_read_timeout),
        }
    }

    /// Before the first request a client gets the header time to start; after, keep-alive.
    fn idle_allowance(&self, policy: &ConnectionPolicy) -> Duration {
        if self.served.load(Ordering::Relaxed) == 0 {
            policy.header_read_timeout
        } else {
            policy.keepalive_timeout
        }
    }

    /// Why the connection should be closed now, if it should.
    fn overdue(&self, policy: &ConnectionPolicy) -> Option<&'static str> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let now = self.now();
        match self.head_since.load(Ordering::Relaxed) {
            0 => {
                let idle = now.saturating_sub(self.last.load(Ordering::Relaxed));
                (idle >= self.idle_allowance(policy).as_millis() as u64)
                    .then_some("idle past its time")
            }
            since => {
                let reading = now.saturating_sub(since - 1);
                (reading >= policy.header_read_timeout.as_millis() as u64)
                    .then_some("request head not received in time")
            }
        }
    }
}

/// A socket that notes when bytes move, for [`Activity`].
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn ranges_match_addresses_and_prefixes() {
        let lb = IpRange::parse("10.0.0.0/8").expect("range");
        assert!(lb.contains(ip("10.200.1.1")));
        assert!(!lb.contains(ip("11.0.0.1")));
        let one = IpRange::parse("192.0.2.7").expect("one");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        assert!(one.contains(ip("::ffff:192.0.2.7")));
        let all = IpRange::parse("0.0.0.0/0").expect("all");
        assert!(all.contains(ip("203.0.113.1")));
        assert!(IpRange::parse("2001:db8::/32").is_some_and(|r| r.contains(ip("2001:db8::5"))));
        assert_eq!(IpRange::parse("10.0.0.0/33"), None);
        assert_eq!(IpRange::parse("x"), None);
    }

    #[test]
    fn a_peer_holds_at_most_its_share_of_connections() {
        let admission = Arc::new(Admission {
            total: Arc::new(Semaphore::new(3)),
            by_peer: Mutex::new(HashMap::new()),
            per_peer: 2,
        });
        let a = ip("192.0.2.1");
        let first = admission.admit(a).expect("first");
        let _second = admission.admit(a).expect("second");
        assert!(admission.admit(a).is_err_and(|e| e.contains("192.0.2.1")));
        let _other = admission.admit(ip("192.0.2.2")).expect("other peer");
        assert!(admission
            .admit(ip("192.0.2.3"))
            .is_err_and(|e| e.contains("maximum")));
        drop(first);
        assert!(admission.admit(a).is_ok());
    }

    #[test]
    fn idle_and_slow_heads_are_overdue_but_requests_in_flight_are_not() {
        let policy = ConnectionPolicy {
            header_read_timeout: Duration::ZERO,
            keepalive_timeout: Duration::ZERO,
            ..ConnectionPolicy::default()
        };
        let activity = Activity::new();
        assert_eq!(activity.overdue(&policy), Some("idle past its time"));
        activity.read();
        assert_eq!(
            activity.overdue(&policy),
            Some("request head not received in time")
        );
        activity.request_started();
        assert_eq!(activity.overdue(&policy), None);
        activity.request_ended();
        assert!(activity.overdue(&policy).is_some());
    }
}
