//! Named crash points for recovery tests (cargo feature `crash-points`).
//!
//! With the feature on, a process whose `CELLAR_CRASH_AT` names a point aborts there, on
//! the spot, as a power cut or `kill -9` would. Without the feature, `crash_point!` is
//! nothing at all.

/// The crash points, in the order a write passes them.
pub const CRASH_POINTS: &[&str] = &[
    "before-upload",
    "after-upload-before-commit",
    "after-commit-before-state",
    "pending-image-written",
    "install-old-file-retired",
    "install-before-state",
];

/// Aborts the process if `CELLAR_CRASH_AT` is `name` (feature `crash-points` only).
#[cfg(feature = "crash-points")]
pub(crate) fn crash_point(name: &'static str) {
    debug_assert!(CRASH_POINTS.contains(&name), "unknown crash point {name}");
    if std::env::var("CELLAR_CRASH_AT").is_ok_and(|wanted| wanted == name) {
        eprintln!("cellar: crashing at {name} (CELLAR_CRASH_AT)");
        std::process::abort();
    }
}

/// Without the feature, crash points cost nothing.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub(crate) fn crash_point(_name: &'static str) {}
