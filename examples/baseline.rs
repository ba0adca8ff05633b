//! The benchmark's baseline: a bare axum server that reads the request body
//! and answers 200 with a small JSON, on the same tokio runtime settings as
//! `hookrelay serve` (`#[tokio::main]`: multi-threaded, one worker per core)
//! and the same axum/hyper stack. `bench/run.sh` compares hookrelay with it.
//!
//! ```sh
//! cargo run --release --example baseline -- 127.0.0.1:18081
//! ```

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use std::net::SocketAddr;

/// As long as hookrelay's acknowledgement, so both write the same bytes.
const ACK: &str = r#"{"ok":true,"id":"0196b0c8-0000-7000-8000-000000000000","duplicate":false}"#;

async fn accept(body: Bytes) -> impl IntoResponse {
    // Touch the body so reading it cannot be optimised away.
    std::hint::black_box(body.len());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        ACK,
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".to_owned())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("baseline listening on {}", listener.local_addr()?);
    let app = Router::new().fallback(accept);
    axum::serve(listener, app).await
}
