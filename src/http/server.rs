//! The HTTP server loop. warp's own `serve` starts hyper without a timer, which leaves hyper's
//! header-read timeout off: a client could send its headers one byte at a time for as long as it
//! likes (slowloris). Here hyper runs with a timer and `CASCADE_HEADER_TIMEOUT`, each request
//! carries its peer address ([`ClientAddr`]), and shutdown lets open requests finish for a
//! bounded time.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower_service::Service;
use tracing::{debug, warn};

use super::limits::ClientAddr;

/// Serves `svc` (`warp::service(routes)`) on `listener` until `shutdown` resolves; then open
/// connections get `grace` to finish.
pub async fn run<S>(listener: TcpListener, svc: S, header_timeout: Duration, grace: Duration, shutdown: impl Future<Output = ()>)
where
    S: Service<http::Request<Incoming>, Response = warp::reply::Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment instead of spinning.
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let svc = svc.clone();
        let with_addr = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(ClientAddr(addr));
            let mut svc = svc.clone();
            async move { svc.call(req).await }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), with_addr).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(peer = %addr, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        debug!("open connections did not finish in time; closing them");
    }
}
