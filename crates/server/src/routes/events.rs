//! `GET /v1/events`: a WebSocket relaying the caller's own events (seed rule
//! `conflict-future-websocket`): `{"type": "version", ...}` when a new version of their
//! database lands on this instance (its own upload or a download of another instance's),
//! `{"type": "conflict", ...}` when an upload found another writer first.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Extension, State};
use axum::response::Response;
use cellar_engine::{Event, UserId};
use tokio::sync::broadcast::{self, error::RecvError};
use tracing::warn;

use crate::error::{ApiError, UserErrors};
use crate::state::{AppState, Shutdown};
use crate::sync::set_version;

/// How long a client may take to accept one message.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

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
        let relaying = relay(socket, user, events, shutdown.clone());
        shutdown.tasks().track_future(relaying)
    });
    set_version(&mut response, status.version);
    Ok(response)
}

/// Forwards `user`'s events until the client leaves or the server shuts down.
async fn relay(
    mut socket: WebSocket,
    user: UserId,
    mut events: broadcast::Receiver<Event>,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) if event.user_id() == user.as_str() => {
                    if send(&mut socket, &event).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    warn!(user = %user, missed, "a WebSocket subscriber fell behind; events were skipped");
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                // Pings are answered by the WebSocket itself; anything else is ignored.
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            () = shutdown.closing() => {
                let bye = CloseFrame { code: close_code::AWAY, reason: "server shutting down".into() };
                let _ = bounded(socket.send(Message::Close(Some(bye)))).await;
                return;
            }
        }
    }
}

/// Sends one event; a client that does not take it within [`SEND_TIMEOUT`] is dropped, so
/// that a stalled reader can neither pile up memory nor hold up shutdown.
async fn send(socket: &mut WebSocket, event: &Event) -> Result<(), axum::Error> {
    let text = serde_json::to_string(event).map_err(axum::Error::new)?;
    bounded(socket.send(Message::Text(text.into()))).await
}

async fn bounded(
    sending: impl Future<Output = Result<(), axum::Error>>,
) -> Result<(), axum::Error> {
    tokio::time::timeout(SEND_TIMEOUT, sending)
        .await
        .unwrap_or_else(|elapsed| Err(axum::Error::new(elapsed)))
}
