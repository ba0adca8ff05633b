//! The admin API and UI, served on the admin listener (`[admin] listen`)
//! only: `/api/...` for scripts and `hookrelay tail`, `/ui/...` for people.
//!
//! - [`auth`]: bearer token, the UI's session cookie, CSRF;
//! - [`api`]: the JSON handlers;
//! - [`sse`]: `GET /api/events/stream`, Server-Sent Events;
//! - [`ui`]: the server-rendered pages (sign-in, overview).
//!
//! Every read goes through [`crate::store::inspect`], so both store
//! backends answer the same shapes.

pub mod api;
pub mod auth;
pub mod sse;
pub mod ui;

use crate::server::AppState;
use crate::store::inspect::Inspector;
use auth::Sessions;
use axum::Router;
use axum::routing::{get, post};
use std::sync::Arc;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub app: AppState,
    pub inspector: Inspector,
    pub sessions: Arc<Sessions>,
}

impl AdminState {
    pub fn new(app: AppState) -> AdminState {
        AdminState {
            inspector: Inspector::new(&app.store),
            sessions: Arc::default(),
            app,
        }
    }

    /// The configured sinks' names, in config order.
    pub fn sink_names(&self) -> Vec<String> {
        self.app
            .config()
            .sinks
            .iter()
            .map(|s| s.name().to_owned())
            .collect()
    }
}

/// `/api/...` and `/ui/...`, for the admin listener's router.
pub fn routes<S: Clone + Send + Sync + 'static>(app: AppState) -> Router<S> {
    let state = AdminState::new(app);
    let protected = Router::new()
        .route("/api/events", get(api::events))
        .route("/api/events/stream", get(sse::stream))
        .route("/api/events/{id}", get(api::event))
        .route("/api/sinks", get(api::sinks))
        .route("/api/dead-letters", get(api::dead_letters))
        .route("/api/dead-letters/replay", post(api::replay))
        .route("/ui/", get(ui::overview))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ));
    Router::new()
        .route("/ui/sign-in", get(ui::sign_in_form).post(ui::sign_in))
        .route("/ui/sign-out", post(ui::sign_out))
        .merge(protected)
        .with_state(state)
}
