//! What the admin routes share, and the background work that keeps it current: following
//! the engine's events into the feed and the directory, sampling the stats, listing the
//! bucket (at start, and again once the listing is stale). All of it runs on the server's
//! task tracker and stops at shutdown.

use std::sync::Arc;

use cellar_engine::{BucketReader, Error, Event, UserId};
use chrono::Utc;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinHandle;
use tracing::warn;

use super::directory::{Directory, FRESH_FOR, Page};
use super::feed::Feed;
use super::stats::Stats;
use crate::error::ApiError;
use crate::state::AppState;

/// The admin routes' state.
pub(super) struct Admin {
    /// The v1 API's state: the engine, the request counts, the shutdown signal.
    pub app: Arc<AppState>,
    /// The bucket, read as the operator's commands read it.
    pub reader: BucketReader,
    /// The users in the bucket.
    pub directory: Directory,
    /// Recent events and conflict counts.
    pub feed: Feed,
    /// The samples for the plots.
    pub stats: Stats,
}

impl Admin {
    /// The state, with its background work started: from now on no event is missed and a
    /// sample is taken every second.
    pub(super) fn start(app: &Arc<AppState>) -> Arc<Self> {
        let reader = app.engine.bucket_reader();
        let admin = Arc::new(Self {
            app: Arc::clone(app),
            directory: Directory::new(reader.clone()),
            reader,
            feed: Feed::new(),
            stats: Stats::default(),
        });
        let tasks = app.shutdown.tasks();
        tasks.spawn(Arc::clone(&admin).follow(app.engine.subscribe()));
        let sampling = Arc::clone(&admin);
        tasks.spawn(async move {
            let stop = sampling.app.shutdown.closing();
            sampling.stats.sample_until(&sampling.app, stop).await;
        });
        // Listing a large bucket takes a hundred round trips or more: started now, the
        // dashboard's first page need not wait for it.
        drop(admin.list());
        admin
    }

    /// A page of the users in the bucket: listed now if never listed, else from memory
    /// (and listed again in the background when the listing is stale).
    pub(super) async fn page(
        self: &Arc<Self>,
        search: &str,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Page, ApiError> {
        match self.directory.age() {
            None => self.list().await.map_err(|panicked| {
                ApiError::internal(format!("listing the bucket: {panicked}"))
            })??,
            Some(age) if age >= FRESH_FOR && !self.directory.is_listing() => drop(self.list()),
            Some(_) => {}
        }
        Ok(self.directory.page(search, after, limit))
    }

    /// Lists the bucket in a task of its own, so that a caller who leaves cannot cut a
    /// LIST short; shutdown can.
    fn list(self: &Arc<Self>) -> JoinHandle<Result<(), Error>> {
        let admin = Arc::clone(self);
        self.app.shutdown.tasks().spawn(async move {
            tokio::select! {
                listed = admin.directory.refresh() => listed.inspect_err(|err| {
                    warn!(error = %err, "cannot list the bucket's users for the dashboard");
                }),
                () = admin.app.shutdown.closing() => Ok(()),
            }
        })
    }

    /// Keeps what the engine publishes until shutdown.
    async fn follow(self: Arc<Self>, mut events: broadcast::Receiver<Event>) {
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(event) => self.saw(event),
                    Err(RecvError::Lagged(missed)) => {
                        warn!(missed, "the dashboard's feed fell behind the engine's events; some were skipped");
                    }
                    Err(RecvError::Closed) => return,
                },
                () = self.app.shutdown.closing() => return,
            }
        }
    }

    fn saw(&self, event: Event) {
        if let Event::Version { user_id, .. } = &event
            && let Ok(user) = UserId::new(user_id.as_str())
        {
            self.directory.saw(&user);
        }
        self.feed.record(event, Utc::now());
    }
}
