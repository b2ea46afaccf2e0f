//! The demo page: a join form, video tiles and chat, served at `/demo/`.
//!
//! On in `--dev` (where `/demo/token` mints a join token with the dev key), off otherwise
//! unless `demo.enabled` is set; outside dev mode it never mints tokens. The page's own files
//! are compiled into the binary; `livekit-client` is read from the npm install the project's
//! setup script makes (`demo.livekit_client_js`), never from a CDN.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../../../web/demo/index.html");
const APP_JS: &str = include_str!("../../../web/demo/app.js");
const STYLE_CSS: &str = include_str!("../../../web/demo/style.css");

/// Where the UMD build of `livekit-client` is expected after `scripts/setup-node.sh`.
pub const DEFAULT_CLIENT_JS: &str = "node_modules/livekit-client/dist/livekit-client.umd.js";

#[derive(Clone, Debug)]
pub struct DemoConfig {
    pub client_js: PathBuf,
    /// `Some((key, secret))` only in dev mode: the page may ask for tokens.
    pub mint: Option<(String, String)>,
}

pub fn router(cfg: DemoConfig) -> Router {
    Router::new()
        .route(
            "/demo",
            get(|| async { axum::response::Redirect::permanent("/demo/") }),
        )
        .route(
            "/demo/",
            get(|| async { static_file("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/demo/app.js",
            get(|| async { static_file("text/javascript", APP_JS) }),
        )
        .route(
            "/demo/style.css",
            get(|| async { static_file("text/css", STYLE_CSS) }),
        )
        .route("/demo/livekit-client.umd.js", get(client_js))
        .route("/demo/token", get(token))
        .with_state(Arc::new(cfg))
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn client_js(State(cfg): State<Arc<DemoConfig>>) -> Response {
    match tokio::fs::read(&cfg.client_js).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "text/javascript")], bytes).into_response(),
        Err(e) => (
            StatusCode::NOT_FOUND,
            format!(
                "livekit-client not found at {} ({e}); run scripts/setup-node.sh",
                cfg.client_js.display()
            ),
        )
            .into_response(),
    }
}

async fn token(State(cfg): State<Arc<DemoConfig>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some((key, secret)) = &cfg.mint else {
        return (
            StatusCode::FORBIDDEN,
            "token minting is only available in --dev mode",
        )
            .into_response();
    };
    let (Some(room), Some(identity)) = (q.get("room"), q.get("identity")) else {
        return (StatusCode::BAD_REQUEST, "room and identity are required").into_response();
    };
    if room.is_empty() || identity.is_empty() || room.len() > 256 || identity.len() > 256 {
        return (
            StatusCode::BAD_REQUEST,
            "room and identity must be 1 to 256 characters",
        )
            .into_response();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let claims = pylon_auth::Claims {
        iss: key.clone(),
        sub: identity.clone(),
        name: identity.clone(),
        nbf: Some(now),
        exp: Some(now + 3600),
        video: Some(pylon_auth::VideoGrant {
            room_join: true,
            room: room.clone(),
            can_update_own_metadata: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let jwt = pylon_auth::mint(&claims, secret.as_bytes());
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "token": jwt }).to_string(),
    )
        .into_response()
}
