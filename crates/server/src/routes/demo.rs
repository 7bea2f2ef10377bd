//! The end-user demo app at `/demo` (`server.demo`): a video editor's projects and their
//! clips, kept in the caller's own database through `POST /v1/query` and kept current
//! through `/v1/events`, with the JavaScript client of `clients/js`.

use axum::Router;

use crate::assets::{self, Asset, HTML, SCRIPT, STYLE};

static ASSETS: [Asset; 4] = [
    Asset {
        path: "/demo",
        content_type: HTML,
        body: include_str!("../../assets/demo/index.html"),
    },
    Asset {
        path: "/demo/app.js",
        content_type: SCRIPT,
        body: include_str!("../../assets/demo/app.js"),
    },
    Asset {
        path: "/demo/app.css",
        content_type: STYLE,
        body: include_str!("../../assets/demo/app.css"),
    },
    // The client as `clients/js` ships it: one copy in the repository.
    Asset {
        path: "/demo/cellar.js",
        content_type: SCRIPT,
        body: include_str!("../../../../clients/js/cellar.js"),
    },
];

/// The app's routes.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    assets::routes(&ASSETS)
}
