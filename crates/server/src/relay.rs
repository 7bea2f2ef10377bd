//! Events relayed to a WebSocket client until it leaves or the server shuts down: a user's
//! own on `/v1/events`, every user's on the operator's `/v1/admin/events`.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use serde::Serialize;
use tokio::sync::broadcast::{self, error::RecvError};
use tracing::warn;

use crate::state::Shutdown;

/// How long a client may take to accept one message.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Forwards the `wanted` events as JSON text messages until the client leaves, the
/// channel closes or the server shuts down (then with a "going away" close frame).
pub(crate) async fn relay<T: Clone + Serialize>(
    mut socket: WebSocket,
    mut events: broadcast::Receiver<T>,
    wanted: impl Fn(&T) -> bool,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) if wanted(&event) => {
                    if send(&mut socket, &event).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    warn!(missed, "a WebSocket subscriber fell behind; events were skipped");
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
pub(crate) async fn send<T: Serialize>(
    socket: &mut WebSocket,
    event: &T,
) -> Result<(), axum::Error> {
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
