//! A small app of its own on Cellar's public layers: each user has a "projects" table in
//! their own SQLite database, kept in a folder store in a temporary directory.
//!
//! ```text
//! cargo run -p cellar-server --example projects [ADDRESS]     # default 127.0.0.1:3000
//!
//! curl -X POST localhost:3000/projects -H 'X-User-Id: alice' \
//!      -H 'Content-Type: application/json' -d '{"name": "garden"}'
//! curl localhost:3000/projects -H 'X-User-Id: alice'
//! ```
//!
//! The handlers never upload anything themselves: the database-sync layer brings the
//! caller's database up to date before them and, when they answer with success, uploads
//! it once if they wrote (the `Cellar-Version` header says which version they produced).

use std::sync::Arc;

use anyhow::Context;
use axum::routing::get;
use axum::{Json, Router};
use cellar_engine::{Engine, EngineConfig, LocalStore, TrackedConnection};
use cellar_server::{ApiError, AuthMode, DatabaseSyncLayer, Db, Limits, UserContextLayer};
use serde::{Deserialize, Serialize};

/// Schema migrations, applied in order; `PRAGMA user_version` says how many ran.
const MIGRATIONS: &[&str] = &["CREATE TABLE projects (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
)"];

#[derive(Serialize)]
struct Project {
    id: i64,
    name: String,
    created_at: String,
}

#[derive(Deserialize)]
struct NewProject {
    name: String,
}

/// Brings the user's schema up to date. Reading `user_version` is a read, so a request on
/// an up-to-date database does not count as a write (and uploads nothing).
fn migrate(conn: &TrackedConnection) -> cellar_engine::Result<()> {
    let applied: usize = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    for (done, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        conn.execute_batch(migration)?;
        conn.execute_batch(&format!("PRAGMA user_version = {}", done + 1))?;
    }
    Ok(())
}

fn list_projects(conn: &TrackedConnection) -> cellar_engine::Result<Vec<Project>> {
    conn.query_map(
        "SELECT id, name, created_at FROM projects ORDER BY id",
        [],
        |row| {
            Ok(Project {
                id: row.get(0)?,
                name: row.get(1)?,
                created_at: row.get(2)?,
            })
        },
    )
}

async fn list(db: Db) -> Result<Json<Vec<Project>>, ApiError> {
    let projects = db
        .run(|conn| {
            migrate(conn)?;
            list_projects(conn)
        })
        .await?;
    Ok(Json(projects))
}

async fn create(db: Db, Json(new): Json<NewProject>) -> Result<Json<Project>, ApiError> {
    let project = db
        .run(move |conn| {
            migrate(conn)?;
            conn.query_row(
                "INSERT INTO projects (name) VALUES (?1) RETURNING id, name, created_at",
                [new.name],
                |row| {
                    Ok(Project {
                        id: row.get(0)?,
                        name: row.get(1)?,
                        created_at: row.get(2)?,
                    })
                },
            )
        })
        .await?;
    Ok(Json(project))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let store = LocalStore::new(dir.path().join("bucket"));
    let engine = Engine::open(EngineConfig::new(dir.path().join("local")), Arc::new(store)).await?;

    let auth = AuthMode::Header {
        trusted_proxy: false,
    };
    // Layers run outside in: the last one added (who is calling) runs first.
    let app = Router::new()
        .route("/projects", get(list).post(create))
        .layer(DatabaseSyncLayer::new(engine, &Limits::default()))
        .layer(UserContextLayer::new(&auth));

    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("binding {address}"))?;
    let local = listener.local_addr()?;
    cellar_server::check_listen_address(local, &auth).map_err(anyhow::Error::msg)?;
    println!(
        "projects app on http://{local} (data in {}); ctrl-c to stop",
        dir.path().display()
    );
    println!(
        "  curl -X POST {local}/projects -H 'X-User-Id: alice' -H 'Content-Type: application/json' -d '{{\"name\": \"garden\"}}'"
    );
    println!("  curl {local}/projects -H 'X-User-Id: alice'");

    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
