//! A real HTTP receiver on 127.0.0.1:0 for sink tests: records what it gets
//! and answers whatever the test scripts (fail for a while, 410, hang,
//! Retry-After).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One answered request: when it came, what it was answered, what it carried.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub status: u16,
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
    /// Answers (status, Retry-After) given first, one a request.
    script: VecDeque<(u16, Option<&'static str>)>,
    mode: Mode,
    answered: Vec<Received>,
    hits: usize,
}

impl TestReceiver {
    pub async fn start(mode: Mode) -> TestReceiver {
        TestReceiver::scripted(&[], mode).await
    }

    /// Answers from `script` (status and Retry-After) first, then as `mode` says.
    pub async fn scripted(script: &[(u16, Option<&'static str>)], mode: Mode) -> TestReceiver {
        let inner = Arc::new(Mutex::new(Inner {
            script: script.iter().copied().collect(),
            mode,
            answered: Vec::new(),
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
        self.attempts()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// Every request answered so far, whatever the status, in arrival order.
    pub fn attempts(&self) -> Vec<Received> {
        self.inner.lock().unwrap().answered.clone()
    }

    /// Every request that reached the receiver, answered or hanging.
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

    /// Waits for the first 2xx answer; then every attempt so far.
    pub async fn wait_for_success(&self, within: Duration) -> Vec<Received> {
        self.wait_for(1, within).await;
        self.attempts()
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap) {
    let answer = {
        let mut g = inner.lock().unwrap();
        g.hits += 1;
        match (g.script.pop_front(), g.mode) {
            (Some(scripted), _) => Some(scripted),
            (None, Mode::Status(code)) => Some((code, None)),
            (None, Mode::Hang) => None,
        }
    };
    let Some((status, retry_after)) = answer else {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return (StatusCode::OK, HeaderMap::new());
    };
    inner.lock().unwrap().answered.push(Received {
        at: Instant::now(),
        status,
        headers,
        body,
    });
    let mut out = HeaderMap::new();
    if let Some(ra) = retry_after {
        out.insert("retry-after", ra.parse().unwrap());
    }
    (StatusCode::from_u16(status).unwrap(), out)
}
