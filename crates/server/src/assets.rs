//! Pages for people (the operator's dashboard, the demo app): static files built into the
//! binary, so that nothing is fetched at run time. They are served as plain routes, outside
//! the v1 API and its OpenAPI description.

use axum::Router;
use axum::routing::get;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};

/// One file of a page.
pub(crate) struct Asset {
    /// Where it is served.
    pub path: &'static str,
    /// Its media type.
    pub content_type: &'static str,
    /// Its text (`include_str!`).
    pub body: &'static str,
}

/// The media types of the files a page is made of.
pub(crate) const HTML: &str = "text/html; charset=utf-8";
/// JavaScript modules.
pub(crate) const SCRIPT: &str = "text/javascript; charset=utf-8";
/// Style sheets.
pub(crate) const STYLE: &str = "text/css; charset=utf-8";

/// Scripts, styles and connections from this origin only: a page holds a token in memory,
/// and no injected or third-party script may run beside it or send it elsewhere.
const POLICY: &str =
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A route per file, each with its type; a browser revalidates them (`no-cache`), so a new
/// build's page never runs with an old build's script.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(assets: &'static [Asset]) -> Router<S> {
    assets.iter().fold(Router::new(), |router, asset| {
        let headers = [
            (CONTENT_TYPE, asset.content_type),
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY, POLICY),
            (REFERRER_POLICY, "no-referrer"),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ];
        router.route(
            asset.path,
            get(move || async move { (headers, asset.body) }),
        )
    })
}
