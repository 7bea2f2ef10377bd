//! Integration tests: the real server on 127.0.0.1, a real HTTP client, real stores (a
//! folder store, and SeaweedFS or moto from `cellar-testkit`).

mod common;

mod admin;
mod api;
mod connections;
mod events;
mod history;
mod hostile;
mod identity;
mod layers;
mod s3;
mod shutdown;
