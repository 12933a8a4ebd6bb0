//! The `/metrics` HTTP endpoint (hyper, HTTP/1.1): each scrape samples the live state and renders it.
//! Bounded (`[metrics]`): at most `max_connections` at once, headers within `header_timeout_ms`, and
//! every connection closed `request_timeout_ms` after it was accepted, so stalled HTTP clients cannot
//! take the file descriptors that database logins need.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::session::Shared;

/// The exposition format Prometheus expects.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a connection over `max_connections` gets before it is closed (written only if the socket
/// takes it at once: nobody is waited on).
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

/// Serves scrapes on `listener` until `stop` fires.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let limits = shared.config().metrics.clone();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(
                max = limits.max_connections,
                "metrics endpoint: too many connections, one refused"
            );
            let _ = stream.try_write(BUSY);
            continue;
        };
        let shared = shared.clone();
        let stop = stop.clone();
        let (header_timeout, request_timeout) = (limits.header_timeout(), limits.request_timeout());
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request: Request<Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(respond(&shared, &request)) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                result = tokio::time::timeout(request_timeout, connection) => match result {
                    Err(_) => tracing::debug!("metrics endpoint: connection closed at request_timeout_ms"),
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "metrics endpoint: connection ended with an error");
                    }
                    Ok(Ok(())) => {}
                },
            }
        });
    }
}

fn respond(shared: &Shared, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, CONTENT_TYPE, shared.metrics.render(shared)),
        (&Method::GET, "/") => (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "pgscale: metrics are at /metrics\n".to_string(),
        ),
        (&Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: metrics are at /metrics\n".to_string(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET is served\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
