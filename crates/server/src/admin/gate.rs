//! The operator's identity: `Authorization: Bearer <auth.admin_token>` on every admin API
//! route, compared in constant time. The events WebSocket also takes `?token=`, because
//! browsers cannot set headers on a WebSocket; no other admin route does, so the token
//! stays out of the URLs that proxies and logs keep.

use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use http::header::AUTHORIZATION;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::options::AdminToken;

/// What an admin route accepts as proof of the operator.
#[derive(Clone)]
pub(super) struct Gate {
    token: AdminToken,
    /// `?token=` is accepted too (the events WebSocket only).
    from_query: bool,
}

impl Gate {
    /// The header only.
    pub(super) fn header(token: AdminToken) -> Self {
        Self {
            token,
            from_query: false,
        }
    }

    /// The header, or `?token=` (a WebSocket handshake from a browser).
    pub(super) fn header_or_query(token: AdminToken) -> Self {
        Self {
            token,
            from_query: true,
        }
    }

    fn check(&self, request: &Request) -> Result<(), ApiError> {
        let presented = match bearer(request.headers())? {
            Some(token) => token,
            None if self.from_query => query_token(request).ok_or_else(missing)?,
            None => return Err(missing()),
        };
        if bool::from(self.token.as_bytes().ct_eq(presented.as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                "the admin token does not match auth.admin_token",
            ))
        }
    }
}

/// Middleware: answers 401 `unauthorized` unless the request proves the operator.
pub(super) async fn require(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    match gate.check(&request) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

fn missing() -> ApiError {
    ApiError::unauthorized(
        "missing `Authorization: Bearer <admin token>` header (auth.admin_token)",
    )
}

/// The token of the one `Authorization: Bearer …` header, if there is one.
fn bearer(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::unauthorized(
            "the request has more than one Authorization header; send exactly one",
        ));
    }
    value
        .to_str()
        .ok()
        .and_then(|text| text.strip_prefix("Bearer "))
        .map(|token| Some(token.trim().to_owned()))
        .ok_or_else(|| {
            ApiError::unauthorized("the Authorization header is not `Bearer <admin token>`")
        })
}

/// The query string's `token`, percent-decoded.
#[derive(Deserialize)]
struct TokenParam {
    token: Option<String>,
}

fn query_token(request: &Request) -> Option<String> {
    Query::<TokenParam>::try_from_uri(request.uri())
        .ok()?
        .0
        .token
        .filter(|token| !token.is_empty())
}
