//! `GET /v1/events`: a WebSocket relaying the caller's own events (seed rule
//! `conflict-future-websocket`): `{"type": "version", ...}` when a new version of their
//! database lands on this instance (its own upload or a download of another instance's),
//! `{"type": "conflict", ...}` when an upload found another writer first.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Extension, State};
use axum::response::Response;
use cellar_engine::{Event, UserId};

use crate::error::{ApiError, UserErrors};
use crate::relay::relay;
use crate::state::AppState;
use crate::sync::set_version;

/// Upgrades to a WebSocket after the version check, so the answer carries `Cellar-Version`.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "database",
    security(("identity" = [])),
    description = "A WebSocket of the caller's own events, as JSON text messages: \
        `{\"type\": \"version\", ...}` when a new version of their database lands on this \
        instance, `{\"type\": \"conflict\", ...}` when an upload found another writer first. \
        A request that is not a WebSocket handshake answers 400.",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol",
            headers(("Cellar-Version" = u64))),
        UserErrors,
    )
)]
pub(crate) async fn subscribe(
    State(state): State<Arc<AppState>>,
    Extension(user): Extension<UserId>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade
        .map_err(|rejection| ApiError::rejected(rejection.status(), rejection.body_text()))?;
    // Subscribe first: nothing that lands after the version check can be missed.
    let events = state.engine.subscribe();
    let status = state.engine.status(&user).await?;
    let shutdown = state.shutdown.clone();
    let mut response = upgrade.on_upgrade(move |socket| {
        let own = move |event: &Event| event.user_id() == user.as_str();
        let relaying = relay(socket, events, own, shutdown.clone());
        shutdown.tasks().track_future(relaying)
    });
    set_version(&mut response, status.version);
    Ok(response)
}
