//! The user-context layer (the seed's `UserContextMiddleware`): who is calling.
//!
//! It runs before anything is touched. On success the request carries the caller's
//! [`UserId`] as an extension (handlers take `Extension<UserId>`, or [`crate::Db`]); on
//! failure it answers at once: 401 `unauthorized` for a missing or unverifiable identity,
//! 400 `bad_request` for an identity that is not a valid user id (`..`, `a/b`, …) or that
//! is given twice.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use cellar_engine::UserId;
use futures::future::{Either, Ready, ready};
use http::header::{AUTHORIZATION, AsHeaderName, CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Method};
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tower::{Layer, Service};
use tracing::debug;

use crate::error::ApiError;
use crate::options::AuthMode;

/// The header that names the caller in `header` mode.
pub const USER_ID_HEADER: &str = "x-user-id";

/// The one path on which a JWT may come from `?token=`: the events WebSocket. It is
/// compared with `request.uri().path()`, the full path in Cellar's router (its routes are
/// merged, not nested). Inside `Router::nest`, axum strips the prefix before the layer
/// sees the path, so an app's WebSocket must be at `/v1/events` below that prefix.
const QUERY_TOKEN_PATH: &str = "/v1/events";

/// A tower layer that identifies the caller and sets their [`UserId`] as a request
/// extension (see the module docs for the answers it gives instead).
///
/// In JWT mode a `?token=` is taken only for a WebSocket handshake on `/v1/events`, as
/// this layer sees the path: inside `Router::nest`, the path below the nest's prefix.
#[derive(Clone)]
pub struct UserContextLayer {
    identify: Arc<Identify>,
}

impl UserContextLayer {
    /// Identifies callers as `auth` says.
    pub fn new(auth: &AuthMode) -> Self {
        let identify = match auth {
            AuthMode::Header { .. } => Identify::Header,
            AuthMode::Jwt { secret } => Identify::Jwt {
                key: DecodingKey::from_secret(secret.as_bytes()),
                validation: jwt_validation(),
            },
        };
        Self {
            identify: Arc::new(identify),
        }
    }
}

impl<S> Layer<S> for UserContextLayer {
    type Service = UserContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UserContext {
            inner,
            identify: Arc::clone(&self.identify),
        }
    }
}

/// The service [`UserContextLayer`] wraps around a route.
#[derive(Clone)]
pub struct UserContext<S> {
    inner: S,
    identify: Arc<Identify>,
}

impl<S> Service<Request> for UserContext<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match self.identify.caller(&request) {
            Ok(user) => {
                request.extensions_mut().insert(user);
                Either::Right(self.inner.call(request))
            }
            Err(err) => Either::Left(ready(Ok(err.into_response()))),
        }
    }
}

/// How callers are identified, ready to use.
#[expect(clippy::large_enum_variant, reason = "one per server, behind an Arc")]
enum Identify {
    Header,
    Jwt {
        key: DecodingKey,
        validation: Validation,
    },
}

/// The claims Cellar reads from a token; `exp` and `nbf` are checked by the validation.
/// `sub` is optional here only so that its absence gets its own message.
#[derive(serde::Deserialize)]
struct Claims {
    sub: Option<String>,
}

impl Identify {
    fn caller(&self, request: &Request) -> Result<UserId, ApiError> {
        let claimed = match self {
            Identify::Header => header_identity(request.headers())?,
            Identify::Jwt { key, validation } => {
                let token = bearer_token(request)?;
                verify(token, key, validation)?
            }
        };
        UserId::new(claimed).map_err(ApiError::from)
    }
}

fn header_identity(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = single_header(headers, USER_ID_HEADER, "X-User-Id")?.ok_or_else(|| {
        ApiError::unauthorized("missing X-User-Id header (auth.mode = \"header\")")
    })?;
    value
        .to_str()
        .map(str::to_owned)
        .map_err(|_| ApiError::bad_request("the X-User-Id header is not valid text"))
}

/// The value of an identity header, refusing more than one: a proxy that appends its own
/// header instead of replacing the client's would otherwise let the client's come first.
fn single_header<'a>(
    headers: &'a HeaderMap,
    name: impl AsHeaderName,
    label: &str,
) -> Result<Option<&'a HeaderValue>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::bad_request(format!(
            "the request has more than one {label} header; send exactly one identity"
        )));
    }
    Ok(first)
}

/// The token from `Authorization: Bearer …`; for the events WebSocket handshake also from
/// `?token=`, because browsers cannot set headers on a WebSocket. Other requests never take
/// it from the query string, where proxies and logs would keep it.
fn bearer_token(request: &Request) -> Result<&str, ApiError> {
    if let Some(value) = single_header(request.headers(), AUTHORIZATION, "Authorization")? {
        let text = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
        return text.strip_prefix("Bearer ").map(str::trim).ok_or_else(|| {
            ApiError::unauthorized("the Authorization header is not `Bearer <token>`")
        });
    }
    if takes_query_token(request)
        && let Some(token) = query_token(request.uri().query())
    {
        return Ok(token);
    }
    Err(ApiError::unauthorized(
        "missing `Authorization: Bearer <token>` header (auth.mode = \"jwt\")",
    ))
}

/// A WebSocket handshake (`GET`, `Upgrade: websocket`, `Connection: upgrade`) on
/// [`QUERY_TOKEN_PATH`]: an `Upgrade` header alone is not enough, since any client can
/// add one to a plain request.
fn takes_query_token(request: &Request) -> bool {
    let headers = request.headers();
    request.method() == Method::GET
        && request.uri().path() == QUERY_TOKEN_PATH
        && headers
            .get(UPGRADE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.trim().eq_ignore_ascii_case("websocket"))
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|option| option.trim().eq_ignore_ascii_case("upgrade"))
}

/// `token` from a query string. JWTs are URL-safe base64 and dots: no decoding needed.
fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .filter(|token| !token.is_empty())
}

/// Only HS256, whatever the token's header says; `exp` required and checked, `nbf` checked
/// when present, both with jsonwebtoken's default 60 s leeway for clock skew. `aud` is not
/// checked: the shared secret already names Cellar as the audience, and there is no
/// audience to configure.
fn jwt_validation() -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_aud = false;
    validation.validate_nbf = true;
    validation
}

fn verify(token: &str, key: &DecodingKey, validation: &Validation) -> Result<String, ApiError> {
    let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
        .map_err(|err| {
            debug!(error = %err, "refused a token");
            ApiError::unauthorized(refusal(err.kind()))
        })?
        .claims;
    claims
        .sub
        .ok_or_else(|| ApiError::unauthorized("the token has no `sub` claim"))
}

/// Why a token was refused, in words: the parser's own text (which may quote the token)
/// goes to the debug log only.
fn refusal(kind: &JwtErrorKind) -> String {
    match kind {
        JwtErrorKind::ExpiredSignature => "the token has expired".to_owned(),
        JwtErrorKind::ImmatureSignature => "the token is not valid yet".to_owned(),
        JwtErrorKind::InvalidSignature => "the token's signature does not verify".to_owned(),
        JwtErrorKind::InvalidAlgorithm => "the token is not signed with HS256".to_owned(),
        // The claim names come from the validation (`exp`, `nbf`), not from the token.
        JwtErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        JwtErrorKind::InvalidClaimFormat(claim) => {
            format!("the token's `{claim}` claim is not a time in seconds")
        }
        _ => "the token is malformed".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_token_is_found_among_other_parameters() {
        assert_eq!(query_token(Some("a=1&token=x.y.z")), Some("x.y.z"));
        assert_eq!(query_token(Some("token=")), None);
        assert_eq!(query_token(Some("tokens=1")), None);
        assert_eq!(query_token(None), None);
    }
}
