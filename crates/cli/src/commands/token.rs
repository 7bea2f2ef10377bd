//! `cellar token USER`: a token for a server in `auth.mode = "jwt"`, signed with the
//! configured `auth.jwt_secret`, so that the API and the demo app (`/demo#token=…`) can be
//! tried without a sign-in service. In production your own sign-in service issues tokens,
//! signed with the same secret.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use cellar_engine::UserId;
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

use crate::exit::Exit;
use crate::output::{Output, Report};
use crate::settings::Settings;

/// What the server reads from a token (`sub`, checked `exp`), and when it was made.
#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
}

/// The token and whom and how long it is for.
#[derive(Serialize)]
struct Token {
    user_id: String,
    token: String,
    /// Its `exp`: seconds since 1970.
    expires_at: u64,
}

impl Report for Token {
    /// The token alone, so that `$(cellar token alice)` is the token.
    fn to_text(&self) -> String {
        self.token.clone()
    }
}

/// Prints an HS256 token for `user`, valid for `ttl_secs` from now.
pub fn run(
    settings: &Settings,
    user: &UserId,
    ttl_secs: u64,
    output: Output,
) -> anyhow::Result<Exit> {
    let secret = settings.token_secret()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is set before 1970")?
        .as_secs();
    let claims = Claims {
        sub: user.as_str(),
        iat: now,
        exp: now + ttl_secs,
    };
    let token = jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("cannot sign the token")?;
    output.report(&Token {
        user_id: user.to_string(),
        token,
        expires_at: claims.exp,
    })?;
    Ok(Exit::Success)
}
