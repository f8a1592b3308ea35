//! The HTTP server loop: hyper under the axum router, with bounds on what
//! one connection, and all of them together, may hold.
//!
//! - Read buffer: `axum::serve` leaves hyper's default, which grows to
//!   about 400 KiB per connection while a fast client streams an upload;
//!   capped at [`READ_BUF`], memory per upload stays small at no
//!   measurable cost in throughput.
//! - Header read timeout: a connection that does not deliver a complete
//!   request head in time is closed (slow-loris clients held sockets, and
//!   file descriptors, forever). hyper enforces it for HTTP/1 heads; the
//!   watchdog here also covers the first bytes, which the HTTP/1-or-2
//!   detection reads before hyper's timer starts.
//! - Idle timeout: a connection with no request in flight (a parked long
//!   poll or a streaming response counts as in flight) and no traffic for
//!   this long is closed.
//! - Connection cap: at most `max_connections` at once; further clients
//!   wait in the listen backlog until one ends, so `/health` still answers
//!   when a slot frees instead of the process running out of descriptors.
//! - Descriptor budget: at start [`fit_to_fd_limit`] raises the soft
//!   `RLIMIT_NOFILE` to the hard limit and lowers the cap to what the
//!   limit allows after headroom for the database pool, the runtime and
//!   one open file per connection (a spooled upload, a streamed blob): a
//!   cap above the limit let a slow-loris flood take every descriptor, so
//!   the requests already in progress failed to open their files.
//! - Accept errors (out of file descriptors and the like) are logged and
//!   retried after a pause; they never end the loop.
//!
//! - TLS (`--tls-cert/--tls-key`, rustls on ring, [`tls_acceptor`]): the
//!   handshake runs in the connection's own task, under the same watchdog
//!   as the request head (a client that never finishes it is closed after
//!   the header read timeout), and ALPN offers HTTP/2 and HTTP/1.1.
//! - Every request carries its peer address (`ConnectInfo`), which the
//!   rate limit keys tokenless clients by.
//!
//! Shutdown is graceful: the listener closes, in-flight requests finish.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::{Body, HttpBody};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Largest read buffer of one HTTP/1 connection.
pub const READ_BUF: usize = 128 * 1024;
/// How long in-flight requests get to finish at shutdown.
pub const DRAIN: Duration = Duration::from_secs(30);
/// Pause after a failed accept (typically EMFILE) before trying again.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Bounds on connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Time a client gets to send a complete request head.
    pub header_read_timeout: Duration,
    /// Time a connection may sit with no request in flight and no traffic.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Descriptors kept for everything but client connections and their
/// files: stdio, the listeners, the runtime's epoll and event fds, the
/// database pool (SQLite: 8 connections × database, WAL and shared-memory
/// files; PostgreSQL: 20 sockets and the NOTIFY listener), the metrics
/// listener's connections ([`METRICS_CONNECTIONS`]) and outgoing calls
/// (push deliveries, the embedding service, S3).
pub const FD_RESERVE: u64 = 128;
/// Connections the metrics listener serves at once (a scraper needs one).
pub const METRICS_CONNECTIONS: usize = 16;
/// Descriptors one client connection may hold: its socket and one file.
pub const FDS_PER_CONNECTION: u64 = 2;
/// Where the soft limit is raised to when the hard limit is unlimited
/// (Linux's default `fs.nr_open`).
const UNLIMITED_TARGET: u64 = 1 << 20;

/// The connection cap a descriptor limit of `soft` allows for a requested
/// `cap`: never above `(soft - FD_RESERVE) / FDS_PER_CONNECTION`, never
/// below 1.
pub fn cap_for_fd_limit(cap: usize, soft: u64) -> usize {
    let fits = soft.saturating_sub(FD_RESERVE) / FDS_PER_CONNECTION;
    cap.min(usize::try_from(fits).unwrap_or(usize::MAX)).max(1)
}

/// Raises the soft `RLIMIT_NOFILE` toward the hard limit, then lowers
/// `limits.max_connections` to what the resulting limit allows
/// ([`cap_for_fd_limit`]). Logs the decision as one event with the
/// numbers (a warning when the cap was lowered).
pub fn fit_to_fd_limit(limits: ConnLimits) -> ConnLimits {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let before = getrlimit(Resource::Nofile);
    let hard = before.maximum.unwrap_or(UNLIMITED_TARGET);
    let mut soft = before.current.unwrap_or(u64::MAX).min(hard);
    let mut raise_error = None;
    if soft < hard {
        let raised = Rlimit {
            current: Some(hard),
            maximum: before.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => soft = hard,
            Err(e) => raise_error = Some(e.to_string()),
        }
    }
    let cap = cap_for_fd_limit(limits.max_connections, soft);
    let fields = (
        before.current.map_or(-1, |v| v as i64),
        before.maximum.map_or(-1, |v| v as i64),
        soft,
    );
    if cap < limits.max_connections {
        tracing::warn!(
            fd_soft_limit_at_start = fields.0, fd_hard_limit = fields.1, fd_soft_limit = fields.2,
            fd_reserve = FD_RESERVE, fds_per_connection = FDS_PER_CONNECTION,
            max_connections_requested = limits.max_connections, max_connections = cap,
            raise_error = raise_error.as_deref().unwrap_or(""),
            "the connection cap is lowered to fit the file-descriptor limit; raise `ulimit -n` (the hard limit) to serve more"
        );
    } else {
        tracing::info!(
            fd_soft_limit_at_start = fields.0,
            fd_hard_limit = fields.1,
            fd_soft_limit = fields.2,
            fd_reserve = FD_RESERVE,
            fds_per_connection = FDS_PER_CONNECTION,
            max_connections_requested = limits.max_connections,
            max_connections = cap,
            raise_error = raise_error.as_deref().unwrap_or(""),
            "the connection cap fits the file-descriptor limit"
        );
    }
    ConnLimits {
        max_connections: cap,
        ..limits
    }
}

/// The PEM files `--tls-cert` and `--tls-key` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// The TLS side of `--tls-cert/--tls-key`: the PEM chain and key read
/// and checked (a key that does not match the certificate fails here, at
/// start-up, not at the first handshake).
pub fn tls_acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("failed to read --tls-cert {}", files.cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "--tls-cert {} holds no certificate",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("failed to read --tls-key {}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("BUG: ring supports the default TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("--tls-cert and --tls-key do not make a usable pair")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown`,
/// then lets in-flight requests finish (up to [`DRAIN`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(READ_BUF)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        // A slot first: at the cap, new clients wait in the backlog.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("BUG: the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "failed to accept a connection; retrying shortly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let service = Counted {
            inner: TowerToHyperService::new(router.clone()),
            activity: activity.clone(),
            peer,
        };
        let io = Tracked {
            inner: stream,
            activity: activity.clone(),
        };
        let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let conn = async move {
                match tls {
                    None => serve_connection(&builder, TokioIo::new(io), service, watcher).await,
                    Some(tls) => match tls.accept(io).await {
                        Ok(io) => {
                            serve_connection(&builder, TokioIo::new(io), service, watcher).await
                        }
                        Err(e) => Err(format!("TLS handshake failed: {e}").into()),
                    },
                }
            };
            tokio::select! {
                ended = conn => if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                why = activity.expired(limits) => {
                    tracing::debug!(%peer, why, "closing a connection");
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after the shutdown grace period; closing them");
    }
}

/// The router served on one connection's `io` (plain or TLS), watched for
/// the graceful shutdown.
async fn serve_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: Counted<TowerToHyperService<Router>>,
    watcher: Watcher,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = builder.serve_connection_with_upgrades(io, service);
    watcher.watch(conn.into_owned()).await
}

/// What the watchdog of one connection knows about it.
struct Activity {
    opened: Instant,
    /// Milliseconds after `opened` of the last byte read or written.
    last_io_ms: AtomicU64,
    /// Requests whose head was read and whose response is not finished.
    in_flight: AtomicUsize,
    /// Requests whose head was read, ever.
    started: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_io_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Resolves when the connection should be closed, saying why.
    async fn expired(&self, limits: ConnLimits) -> &'static str {
        let tick = (limits.header_read_timeout.min(limits.idle_timeout) / 4)
            .max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(tick).await;
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                continue;
            }
            let now = self.opened.elapsed();
            if self.started.load(Ordering::SeqCst) == 0 {
                if now >= limits.header_read_timeout {
                    return "no complete request head within the header read timeout";
                }
                continue;
            }
            let last_io = Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed));
            if now.saturating_sub(last_io) >= limits.idle_timeout {
                return "idle past the idle timeout";
            }
        }
    }
}

/// Marks a request in flight from its head until its response body ends
/// (or is dropped).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.started.fetch_add(1, Ordering::SeqCst);
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The router, counting requests in flight on the connection and handing
/// each request its peer address.
struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
    peer: std::net::SocketAddr,
}

type BoxedResponse<E> =
    Pin<Box<dyn Future<Output = Result<axum::response::Response, E>> + Send + 'static>>;

impl<S> hyper::service::Service<hyper::Request<Incoming>> for Counted<S>
where
    S: hyper::service::Service<hyper::Request<Incoming>, Response = axum::response::Response>,
    S::Future: Send + 'static,
{
    type Response = axum::response::Response;
    type Error = S::Error;
    type Future = BoxedResponse<S::Error>;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let guard = InFlight::start(&self.activity);
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| {
                Body::new(GuardedBody {
                    inner: body,
                    _guard: guard,
                })
            }))
        })
    }
}

/// A response body that keeps its request in flight until it is done.
struct GuardedBody {
    inner: Body,
    _guard: InFlight,
}

impl HttpBody for GuardedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting when bytes move.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve_and_a_file_per_connection() {
        // (requested cap, soft limit) → cap; the case is in the message.
        for (cap, soft, want) in [
            (4096, 256, 64),
            (4096, 1024, 448),
            (4096, 1_048_576, 4096),
            (10, 256, 10),
            (4096, 129, 1),
            (4096, 0, 1),
            (4096, u64::MAX, 4096),
        ] {
            assert_eq!(cap_for_fd_limit(cap, soft), want, "cap {cap}, soft {soft}");
        }
    }
}
