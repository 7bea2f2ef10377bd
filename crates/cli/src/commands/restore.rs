//! `cellar restore USER (--version N | --at TIME)` and `cellar fork USER NEW_USER
//! [--version N]`: an old version's content written as a new version, of the same user or
//! of a new one. History is never rewritten, so a restore is undone by another.
//!
//! Both write, so they open an engine on the store like `push` (write access needed).

use anyhow::Context;
use cellar_engine::{RestoreTarget, Restored, UserId, Version};
use serde::Serialize;

use super::Bucket;
use crate::exit::Exit;
use crate::output::{Output, Report};

/// What a restore did.
#[derive(Serialize)]
struct RestoreReport {
    user_id: String,
    #[serde(flatten)]
    restored: Restored,
}

impl Report for RestoreReport {
    fn to_text(&self) -> String {
        let Restored {
            version,
            restored,
            undo,
        } = self.restored;
        let user = &self.user_id;
        format!(
            "restored {user} to the content of version {restored} as version {version}; \
             undo with: cellar restore {user} --version {undo}"
        )
    }
}

/// What a fork made.
#[derive(Serialize)]
struct Forked {
    user_id: String,
    /// The version copied (`None`: the newest).
    from_version: Option<Version>,
    new_user_id: String,
    /// The new user's first version.
    version: Version,
}

impl Report for Forked {
    fn to_text(&self) -> String {
        let from = match self.from_version {
            Some(version) => format!("version {version}"),
            None => "the newest version".into(),
        };
        format!(
            "forked {} ({from}) into {} as version {}",
            self.user_id, self.new_user_id, self.version
        )
    }
}

/// Restores `user`'s database to the content of the version `target` names.
pub async fn restore(
    bucket: &Bucket<'_>,
    user: &UserId,
    target: RestoreTarget,
    output: Output,
) -> anyhow::Result<Exit> {
    let engine = bucket.open().await?;
    let spinner = output.spinner(format!("restoring {user}"));
    let restored = engine.restore(user, target).await;
    spinner.finish_and_clear();
    let restored = restored.with_context(|| format!("cannot restore user {user}"))?;
    output.report(&RestoreReport {
        user_id: user.to_string(),
        restored,
    })?;
    Ok(Exit::Success)
}

/// Starts `new_user`'s database from `user`'s at `version` (the newest when `None`).
pub async fn fork(
    bucket: &Bucket<'_>,
    user: &UserId,
    new_user: &UserId,
    version: Option<Version>,
    output: Output,
) -> anyhow::Result<Exit> {
    let engine = bucket.open().await?;
    let spinner = output.spinner(format!("forking {user} into {new_user}"));
    let forked = engine.fork(user, new_user, version).await;
    spinner.finish_and_clear();
    let new_version = forked.with_context(|| format!("cannot fork user {user} into {new_user}"))?;
    output.report(&Forked {
        user_id: user.to_string(),
        from_version: version,
        new_user_id: new_user.to_string(),
        version: new_version,
    })?;
    Ok(Exit::Success)
}
