//! The request-path scenarios on real S3-compatible servers (SeaweedFS and moto on
//! 127.0.0.1), where ETags really are MD5 content hashes.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;
mod scenarios;

use std::sync::Arc;

use cellar_engine::{S3Store, Store};
use cellar_testkit::{S3Kind, S3Server};

/// Every scenario on one server of `kind`, each with its own user.
async fn all_scenarios_on(kind: S3Kind) {
    let server = S3Server::start(kind).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(S3Store::from_object_store(server.object_store()));
    scenarios::second_instance_reads_first_ones_write(store.clone(), "reader").await;
    scenarios::restored_content_never_moves_the_version_back(store.clone(), "restored").await;
    scenarios::corrupted_download_is_refused(store.clone(), "corrupted").await;
    scenarios::foreign_empty_object_is_refused_by_name(store, "foreign").await;
}

#[tokio::test]
async fn request_path_scenarios_on_seaweedfs() {
    all_scenarios_on(S3Kind::SeaweedFs).await;
}

#[tokio::test]
async fn request_path_scenarios_on_moto() {
    all_scenarios_on(S3Kind::Moto).await;
}
