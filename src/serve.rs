//! The HTTP server loop: hyper under the axum router, with its per
//! connection read buffer capped.
//!
//! `axum::serve` leaves hyper's default read buffer, which grows to about
//! 400 KiB per connection while a fast client streams an upload; with dozens
//! of uploads at once that (and the multipart parser's share of it) was
//! most of the server's memory. Capped at [`READ_BUF`], memory per upload
//! stays small at no measurable cost in throughput. Shutdown is graceful:
//! the listener closes, in-flight requests finish.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest read buffer of one HTTP/1 connection.
pub const READ_BUF: usize = 128 * 1024;
/// How long in-flight requests get to finish at shutdown.
pub const DRAIN: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `shutdown`, then lets in-flight
/// requests finish (up to [`DRAIN`]).
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(READ_BUF);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
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
