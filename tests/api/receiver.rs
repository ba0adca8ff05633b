//! A real HTTP receiver on 127.0.0.1:0 for sink tests: records what it gets
//! and answers whatever the test scripts (fail for a while, 410, hang).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Status(u16),
    Hang,
}

#[derive(Clone)]
pub struct TestReceiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    mode: Mode,
    received: Vec<Received>,
    hits: usize,
}

impl TestReceiver {
    pub async fn start(mode: Mode) -> TestReceiver {
        let inner = Arc::new(Mutex::new(Inner {
            mode,
            received: Vec::new(),
            hits: 0,
        }));
        let app = Router::new()
            .route("/hook", post(handle))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestReceiver { addr, inner }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.inner.lock().unwrap().mode = mode;
    }

    /// Requests answered 2xx, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Every request that reached the receiver, whatever it answered.
    pub fn hits(&self) -> usize {
        self.inner.lock().unwrap().hits
    }

    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("receiver expected {n} deliveries, got {}", got.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mode = {
        let mut g = inner.lock().unwrap();
        g.hits += 1;
        g.mode
    };
    match mode {
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK
        }
        Mode::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap();
            if status.is_success() {
                inner
                    .lock()
                    .unwrap()
                    .received
                    .push(Received { headers, body });
            }
            status
        }
    }
}
