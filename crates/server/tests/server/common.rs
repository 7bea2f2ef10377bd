//! Test harness: engines over real stores, a real server on an ephemeral port, answers.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cellar_engine::{ConflictPolicy, Engine, EngineConfig, LocalStore, S3Store, Store};
use cellar_server::ServerOptions;
use cellar_testkit::S3Server;
use object_store::aws::AmazonS3Builder;
use object_store::{ClientOptions, RetryConfig};
use reqwest::RequestBuilder;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any single step of a test may take.
pub const STEP: Duration = Duration::from_secs(30);

/// A temporary folder holding a folder store (`bucket/`) and instances' data dirs.
pub struct Dirs(tempfile::TempDir);

impl Dirs {
    pub fn new() -> Self {
        Self(tempfile::tempdir().expect("temp dir"))
    }

    /// The folder store every instance made from these dirs shares.
    pub fn bucket(&self) -> Arc<dyn Store> {
        Arc::new(LocalStore::new(self.0.path().join("bucket")))
    }

    /// An instance's local data dir.
    pub fn data(&self, instance: &str) -> PathBuf {
        self.0.path().join(instance)
    }
}

/// An engine over `store` with its own data dir.
pub async fn engine(data: PathBuf, store: Arc<dyn Store>, conflict: ConflictPolicy) -> Engine {
    let mut config = EngineConfig::new(data);
    config.conflict = conflict;
    Engine::open(config, store).await.expect("engine opens")
}

/// A store on `server`'s bucket that gives up quickly when the server is gone.
pub fn s3_store(server: &S3Server) -> Arc<dyn Store> {
    let client = AmazonS3Builder::new()
        .with_endpoint(&server.endpoint)
        .with_region(&server.region)
        .with_access_key_id(&server.access_key_id)
        .with_secret_access_key(&server.secret_access_key)
        .with_bucket_name(&server.bucket)
        // Client options replace the builder's, `allow_http` included: set it there.
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(true)
                .with_timeout(Duration::from_secs(10)),
        )
        .with_retry(RetryConfig {
            max_retries: 1,
            retry_timeout: Duration::from_secs(2),
            ..RetryConfig::default()
        })
        .build()
        .expect("S3 client");
    Arc::new(S3Store::from_object_store(Arc::new(client)))
}

/// The real server, serving until stopped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<io::Result<()>>>,
}

/// Shuts a [`TestServer`] down.
pub struct Stopper {
    stop: oneshot::Sender<()>,
    served: JoinHandle<io::Result<()>>,
}

impl Stopper {
    /// Signals shutdown and waits for `serve` to return.
    pub async fn stop(self) -> io::Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(STEP, self.served)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task")
    }
}

impl TestServer {
    pub async fn start(engine: Engine, options: ServerOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(cellar_server::serve(listener, engine, options, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            client: client(),
            stop: Some(stop),
            served: Some(served),
        }
    }

    /// Serves any axum app (one built from the public layers).
    pub async fn start_app(app: axum::Router) -> (SocketAddr, reqwest::Client) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, client())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// The means to shut this server down (once).
    pub fn stopper(&mut self) -> Stopper {
        Stopper {
            stop: self.stop.take().expect("stopped once"),
            served: self.served.take().expect("stopped once"),
        }
    }

    /// `POST /v1/query` as `user` (header auth).
    pub async fn query(&self, user: &str, body: Value) -> Answer {
        answer(
            self.client
                .post(self.url("/v1/query"))
                .header("x-user-id", user)
                .json(&body),
        )
        .await
    }

    /// `GET path` as `user` (header auth).
    pub async fn get(&self, user: &str, path: &str) -> Answer {
        answer(self.client.get(self.url(path)).header("x-user-id", user)).await
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(STEP)
        .build()
        .expect("client")
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    /// `Cellar-Version`, if present.
    pub version: Option<u64>,
    pub body: Value,
    pub bytes: Vec<u8>,
}

impl Answer {
    /// `error.code` of an error body ("" otherwise).
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// `error.message` of an error body ("" otherwise).
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }

    /// Rows of result `index` of a query answer.
    pub fn rows(&self, index: usize) -> &Value {
        &self.body["results"][index]["rows"]
    }
}

pub async fn answer(request: RequestBuilder) -> Answer {
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let version = headers
        .get("cellar-version")
        .map(|v| v.to_str().expect("text").parse().expect("a number"));
    let bytes = response.bytes().await.expect("body").to_vec();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        version,
        body,
        bytes,
    }
}

/// An HS256 token for `sub`, expiring `expires_in` seconds from now (negative: expired).
pub fn token(secret: &str, sub: &str, expires_in: i64) -> String {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let claims = serde_json::json!({ "sub": sub, "exp": now + expires_in });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token")
}

/// A local server on a fresh folder store, header auth, the given options.
pub async fn local_server(options: ServerOptions) -> (TestServer, Engine, Dirs) {
    let dirs = Dirs::new();
    let engine = engine(dirs.data("a"), dirs.bucket(), ConflictPolicy::LastWriteWins).await;
    let server = TestServer::start(engine.clone(), options).await;
    (server, engine, dirs)
}
