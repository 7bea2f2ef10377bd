//! Exit statuses scripts can trust, and which one an error gets.

use std::process::ExitCode;

use cellar_engine::Error as EngineError;
use cellar_engine::store::StoreError;

use crate::settings::ConfigError;

/// What the process tells its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Done; every check passed.
    Success = 0,
    /// A check failed, or what was asked for does not exist.
    Failed = 1,
    /// The command line or the configuration is wrong; fix it before retrying.
    Usage = 2,
    /// The object store could not be reached; retrying later may work.
    Unavailable = 3,
}

impl Exit {
    /// The status for a command that failed with `err`, from the first cause in its chain
    /// that says something about it.
    pub fn of(err: &anyhow::Error) -> Exit {
        err.chain()
            .find_map(|cause| {
                if cause.is::<ConfigError>() {
                    Some(Exit::Usage)
                } else if cause.is::<StoreError>() {
                    Some(Exit::Unavailable)
                } else {
                    cause.downcast_ref::<EngineError>().map(Self::of_engine)
                }
            })
            .unwrap_or(Exit::Failed)
    }

    /// The status for an engine error.
    pub fn of_engine(err: &EngineError) -> Exit {
        match err {
            EngineError::InvalidUserId { .. } | EngineError::Config(_) => Exit::Usage,
            EngineError::Store(_)
            | EngineError::SyncPending { .. }
            | EngineError::EarlierWritePending { .. } => Exit::Unavailable,
            _ => Exit::Failed,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_classified_cause_decides_through_any_context() {
        let store = StoreError::unavailable("get", "k", "connection refused");
        let err = anyhow::Error::from(EngineError::Store(store)).context("cannot list users");
        assert_eq!(Exit::of(&err), Exit::Unavailable);
        let err = anyhow::Error::from(ConfigError::NotUtf8 {
            name: "CELLAR_X".into(),
        })
        .context("loading");
        assert_eq!(Exit::of(&err), Exit::Usage);
        assert_eq!(Exit::of(&anyhow::anyhow!("no database")), Exit::Failed);
    }
}
