//! The HTTP server loop. It is hand-rolled rather than `axum::serve` for two reasons: a fault
//! must be able to drop one connection mid-request ("the change was stored, the answer never
//! came"), and shutdown must not wait for requests that were told to hang.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::pipeline::{ConnControl, OriginalPath};

/// Rewrites a request before routing (Kounta's `.json` suffix).
pub(crate) type Prepare = fn(&mut Request<Incoming>);

/// Serves `router` on `listener` until `shutdown` is cancelled; every task it starts is
/// registered with `tracker`.
pub(crate) fn spawn(
    listener: TcpListener,
    router: Router,
    prepare: Option<Prepare>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) {
    let connections = tracker.clone();
    tracker.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _peer)) => stream,
                Err(_) => {
                    // Out of file descriptors or similar: give the system a moment rather than
                    // spinning on the error.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let kill = CancellationToken::new();
            let conn_control = ConnControl { kill: kill.clone() };
            let router = router.clone();
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let original = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default();
                req.extensions_mut().insert(OriginalPath(original));
                req.extensions_mut().insert(conn_control.clone());
                if let Some(prepare) = prepare {
                    prepare(&mut req);
                }
                let router = router.clone();
                async move {
                    Ok::<_, Infallible>(router.oneshot(req).await.unwrap_or_else(|e| match e {}))
                }
            });
            let shutdown = shutdown.clone();
            connections.spawn(async move {
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                // Dropping the connection future closes the socket and drops any request
                // still being served on it.
                tokio::select! {
                    _ = &mut connection => {}
                    _ = kill.cancelled() => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    });
}
