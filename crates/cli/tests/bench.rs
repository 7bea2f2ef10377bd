//! `cellar bench` against a real `cellar serve`: the report's fields are there and agree
//! with each other. The numbers themselves are not checked: benchmarks are not timed tests.

#![cfg(unix)]

mod support;

use serde_json::Value;
use support::Cellar;
use support::server::Server;

fn number(report: &Value, pointer: &str) -> f64 {
    report
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer}: {report}"))
}

#[test]
fn bench_reports_throughput_latency_errors_and_the_cost_of_syncing() {
    let cellar = Cellar::new();
    let mut server = Server::start(&cellar, &[], &[]);
    let url = server.url("");
    let args = [
        "bench",
        "--url",
        &url,
        "--users",
        "3",
        "--concurrency",
        "4",
        "--requests",
        "50",
        "--write-ratio",
        "0.2",
        "--preload-bytes",
        "256KiB",
    ];
    let report = cellar.json(&args, &[], 0);

    assert_eq!(number(&report, "/requests/total"), 50.0, "{report}");
    assert_eq!(
        report["requests"]["errors"],
        serde_json::json!({}),
        "{report}"
    );
    assert_eq!(
        (
            number(&report, "/requests/reads"),
            number(&report, "/requests/writes")
        ),
        (40.0, 10.0)
    );
    assert!(
        number(&report, "/throughput") > 0.0 && number(&report, "/seconds") > 0.0,
        "{report}"
    );
    let [p50, p95, p99, max] =
        ["p50", "p95", "p99", "max"].map(|p| number(&report, &format!("/latency_ms/{p}")));
    assert!(
        0.0 < p50 && p50 <= p95 && p95 <= p99 && p99 <= max,
        "{report}"
    );
    assert!(
        number(&report, "/setup/first_request_ms/max") > 0.0,
        "{report}"
    );

    let uploads = number(&report, "/store/uploads");
    assert!(
        (1.0..=10.0).contains(&uploads),
        "each upload carries at least one of the 10 writes: {report}"
    );
    assert_eq!(
        number(&report, "/store/uploads_per_write"),
        uploads / 10.0,
        "{report}"
    );
    // A write uploads the pages it changed, not the 256 KiB database (issue 11).
    let bytes_per_write = number(&report, "/store/upload_bytes_per_write");
    assert!(
        (1.0..4096.0).contains(&bytes_per_write),
        "changes of the log, not whole databases: {report}"
    );
    assert_eq!(number(&report, "/store/conflicts"), 0.0, "{report}");
    assert!(report["store"]["download_bytes"].is_u64(), "{report}");

    assert!(server.terminate().success());
}
