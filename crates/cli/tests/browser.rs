//! The pages for people (`/demo`) in headless Chromium: runs the Node tests of
//! `tests/browser/`, which start the built `cellar serve` themselves (`CELLAR_BIN`) and drive
//! Debian's chromium with playwright-core. `scripts/test.sh` installs both; the screenshots
//! go to `target/browser-screenshots/`.

#![cfg(unix)]

use std::path::Path;
use std::process::Command;

#[test]
fn pages_pass_their_browser_tests_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    assert!(
        root.join("tests/browser/node_modules/playwright-core")
            .is_dir(),
        "playwright-core is not installed in tests/browser: run bash scripts/test.sh \
         (or npm ci --prefix tests/browser)"
    );
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target dir holds tmp/")
        .join("browser-screenshots");
    let output = Command::new("node")
        // One file at a time: each launches its own Chromium, and the timing of a test
        // (the conflict's pacing window) should not compete with another browser.
        .args(["--test-concurrency=1", "--test", "tests/browser/"])
        .current_dir(&root)
        .env("CELLAR_BIN", env!("CARGO_BIN_EXE_cellar"))
        .env("CELLAR_SCREENSHOTS", &screenshots)
        .output()
        .expect("run node (Node.js 20 or later)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "node --test tests/browser/ failed ({}):\n{report}",
        output.status
    );
    eprintln!("screenshots in {}", screenshots.display());
}
