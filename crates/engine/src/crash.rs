//! Named crash points for recovery tests (cargo feature `crash-points`), and a way to
//! hold back a download's checks.
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
    "after-apply-before-state",
    "compaction-deleted-before-snapshot",
    "compaction-kept-before-snapshot",
    "compaction-after-snapshot",
    "history-changes-collected",
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

/// Holds back the checks of a staged download (SHA-256, fsync) while a test keeps a
/// [`Held`] for its path (feature `crash-points` only), to show what runs meanwhile.
#[cfg(feature = "crash-points")]
pub mod checks {
    use std::path::{Path, PathBuf};
    use std::sync::{Condvar, Mutex};

    static HELD: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    static RELEASED: Condvar = Condvar::new();

    /// Holds back the checks of the download at `path` until dropped.
    #[must_use = "the checks go on as soon as this is dropped"]
    pub struct Held(PathBuf);

    /// Holds back the checks of the download at `path`.
    pub fn hold(path: &Path) -> Held {
        lock().push(path.to_owned());
        Held(path.to_owned())
    }

    impl Drop for Held {
        fn drop(&mut self) {
            lock().retain(|held| held != &self.0);
            RELEASED.notify_all();
        }
    }

    /// Blocks while the checks of the download at `path` are held.
    pub(crate) fn wait_while_held(path: &Path) {
        let mut held = lock();
        while held.iter().any(|held| held == path) {
            held = RELEASED
                .wait(held)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn lock() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
        HELD.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
