//! The metrics endpoint: one thread answering `GET /metrics` (anything else: 404),
//! stopped when the node shuts down.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server};
use tracing::{debug, info, warn};

use super::{CONTENT_TYPE, Metrics};

/// Why the metrics endpoint could not be served.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {reason}")]
pub struct ServeError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why (the address is in use, not this host's, …).
    pub reason: String,
}

/// A running metrics endpoint. Dropping it stops the thread and closes the port.
pub struct Exporter {
    addr: SocketAddr,
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exporter").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Exporter {
    /// Binds `addr` (port 0: a free port, see [`Exporter::addr`]) and serves `metrics`
    /// there on its own thread.
    pub fn start(addr: SocketAddr, metrics: Metrics) -> Result<Exporter, ServeError> {
        let failed = |reason: String| ServeError { addr, reason };
        let server = Server::http(addr).map_err(|e| failed(e.to_string()))?;
        let bound = server.server_addr().to_ip().ok_or_else(|| failed("not bound to an IP address".into()))?;
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let (serving, stopping) = (server.clone(), stop.clone());
        let thread = thread::Builder::new()
            .name("estate-metrics".into())
            .spawn(move || serve(&serving, &metrics, &stopping))
            .map_err(|e| failed(format!("spawning its thread: {e}")))?;
        info!(addr = %bound, "serving metrics on http://{bound}/metrics");
        Ok(Exporter { addr: bound, server, stop, thread: Some(thread) })
    }

    /// The address bound (with the actual port if port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving: the thread ends after the request it is answering.
    pub fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::Relaxed);
            self.server.unblock();
            let _ = thread.join();
            debug!(addr = %self.addr, "metrics endpoint stopped");
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Answers requests until `stop` is set (and the server unblocked).
fn serve(server: &Server, metrics: &Metrics, stop: &AtomicBool) {
    loop {
        match server.recv() {
            Ok(request) => answer(request, metrics),
            Err(_) if stop.load(Ordering::Relaxed) => return,
            Err(e) => {
                // A failed accept; a short pause keeps a persistent failure from spinning.
                warn!("metrics endpoint: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// `GET /metrics` (with or without a query string): the metrics; anything else: 404.
fn answer(request: Request, metrics: &Metrics) {
    let path = request.url().split('?').next().unwrap_or_default();
    let response = if *request.method() == Method::Get && path == "/metrics" {
        let header = Header::from_bytes(&b"Content-Type"[..], CONTENT_TYPE.as_bytes()).expect("a valid header");
        Response::from_string(metrics.render()).with_header(header)
    } else {
        Response::from_string("not found: the metrics are at GET /metrics\n").with_status_code(404)
    };
    // Always a Content-Length, never chunked: the simplest clients read to the end.
    if let Err(e) = request.respond(response.with_chunked_threshold(usize::MAX)) {
        debug!("metrics endpoint: answering a request: {e}");
    }
}
