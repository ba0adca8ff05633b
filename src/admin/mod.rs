//! The admin API and UI, served on the admin listener (`[admin] listen`)
//! only: `/api/...` for scripts and `hookrelay tail`, `/ui/...` for people.
//!
//! - [`auth`]: bearer token, the UI's session cookie, CSRF;
//! - [`api`]: the JSON handlers;
//! - [`sse`]: `GET /api/events/stream`, Server-Sent Events;
//! - [`ui`]: the sign-in form, the page layout and the compiled-in assets;
//! - [`pages`]: the inspector's server-rendered pages.
//!
//! Every read goes through [`crate::store::inspect`], so both store
//! backends answer the same shapes.

pub mod api;
pub mod auth;
pub mod pages;
pub mod sse;
pub mod ui;

use crate::live::LiveState;
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
    /// Streams and players live now, derived from every stored event.
    pub live: Arc<LiveState>,
}

impl AdminState {
    /// Also starts following the store into the live state: from the oldest
    /// event kept (so the state survives a restart, and with the NATS store
    /// every replica derives it from all replicas' events), then each new one.
    pub fn new(app: AppState) -> AdminState {
        let inspector = Inspector::new(&app.store);
        let live = Arc::new(LiveState::new());
        tokio::spawn(follow(inspector.clone(), Arc::downgrade(&live)));
        AdminState {
            inspector,
            sessions: Arc::default(),
            live,
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
        .route("/api/state/streams", get(api::state_streams))
        .route("/api/state/players", get(api::state_players))
        .route("/ui/", get(pages::events))
        .route("/ui/events/{id}", get(pages::event))
        .route("/ui/events/{id}/replay", post(pages::replay))
        .route("/ui/sinks", get(pages::sinks))
        .route("/ui/live", get(pages::live))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ));
    Router::new()
        .route("/ui/sign-in", get(ui::sign_in_form).post(ui::sign_in))
        .route("/ui/sign-out", post(ui::sign_out))
        // The stylesheet and script hold nothing secret; the sign-in page uses them too.
        .route("/ui/assets/{name}", get(ui::asset))
        .merge(protected)
        .with_state(state)
}

/// Applies every stored event to `live`, in store order, until `live` is
/// dropped; reopens the feed after a store error.
async fn follow(inspector: Inspector, live: std::sync::Weak<LiveState>) {
    use std::time::Duration;
    loop {
        let mut tail = match inspector.follow_all().await {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, "live state: store not readable yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if live.strong_count() == 0 {
                    return;
                }
                continue;
            }
        };
        // After a reopen the pass re-applies what was applied before: the
        // live state is an order-independent merge, so that changes nothing.
        loop {
            let Some(state) = live.upgrade() else { return };
            match tail.next(Duration::from_secs(1)).await {
                Ok(Some(event)) => {
                    if let Ok(envelope) = serde_json::from_str(&event.envelope) {
                        state.apply(&envelope);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "live state: feed ended; reopening");
                    break;
                }
            }
        }
    }
}
