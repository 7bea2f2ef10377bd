//! The operator's dashboard (`/ui`) and the admin API it uses (`/v1/admin/…`), served only
//! when `auth.admin_token` is set: the operator is an identity apart from every user.
//!
//! ```text
//! Engine::subscribe ─► state::follow ─┬► feed       recent events, conflicts ─► /v1/admin/events (WebSocket)
//!                                     │                                       ─► /v1/admin/users/{user}
//!                                     └► directory  users in the bucket, listed into memory,
//! BucketReader::list_users ───────────────►          searched and paged there ─► /v1/admin/users
//! every second ─► stats  HTTP and engine counters, as rates ─► /v1/admin/stats
//! routes::history (the user's own history routes' code) ─► /v1/admin/users/{user}/versions,
//!                                                          …/diff, …/restore
//! ```
//!
//! Every API route goes through `gate` (the admin token, compared in constant time); the
//! page's static files do not, so that a browser can load the page that asks for it.

mod api;
mod directory;
mod feed;
mod gate;
mod state;
mod stats;

use std::sync::Arc;

use axum::middleware::from_fn_with_state;
use utoipa::OpenApi;
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::gate::Gate;
use self::state::Admin;
use crate::assets::{self, Asset};
use crate::options::AdminToken;
use crate::state::AppState;

/// The name of the admin API's security scheme.
const ADMIN: &str = "admin";

/// The dashboard: one page, one module, one style sheet; no build step, no dependency.
static UI: [Asset; 4] = [
    Asset {
        path: "/ui",
        content_type: assets::HTML,
        body: include_str!("../../assets/ui/index.html"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: assets::SCRIPT,
        body: include_str!("../../assets/ui/app.js"),
    },
    Asset {
        path: "/ui/app.css",
        content_type: assets::STYLE,
        body: include_str!("../../assets/ui/app.css"),
    },
    // The client as `clients/js` ships it (the page is built on `CellarAdmin`).
    Asset {
        path: "/ui/cellar.js",
        content_type: assets::SCRIPT,
        body: include_str!("../../../../clients/js/cellar.js"),
    },
];

/// The dashboard and the admin API, described (the page's files are not: they are not
/// API), with their background work started on the server's task tracker.
pub(crate) fn routes(token: AdminToken, app: &Arc<AppState>) -> OpenApiRouter<Arc<AppState>> {
    let api = OpenApiRouter::new()
        .routes(routes!(api::users))
        .routes(routes!(api::user))
        .routes(routes!(api::versions))
        .routes(routes!(api::diff))
        .routes(routes!(api::restore))
        .routes(routes!(api::stats))
        .route_layer(from_fn_with_state(
            Gate::header(token.clone()),
            gate::require,
        ));
    let events = OpenApiRouter::new()
        .routes(routes!(api::events))
        .route_layer(from_fn_with_state(
            Gate::header_or_query(token),
            gate::require,
        ));
    OpenApiRouter::with_openapi(description())
        .merge(api)
        .merge(events)
        .merge(OpenApiRouter::from(assets::routes(&UI)))
        .with_state(Admin::start(app))
}

/// The admin API's tag and security scheme.
#[derive(OpenApi)]
#[openapi(tags((name = "admin", description = "The operator's view of every user \
    (only with `auth.admin_token`)")))]
struct Fixed;

fn description() -> Document {
    let mut document = Fixed::openapi();
    let scheme = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .description(Some(
            "The operator's token, `auth.admin_token`: an identity apart from every user's. \
             On the `/v1/admin/events` WebSocket handshake it may come as `?token=`.",
        ))
        .build();
    document
        .components
        .get_or_insert_with(Default::default)
        .add_security_scheme(ADMIN, SecurityScheme::Http(scheme));
    document
}
