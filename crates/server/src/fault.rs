//! Fault injection for tests, compiled into debug builds only: `POST /debug/fault` with a
//! Room API token that may create rooms, and `worker=<i>&kind=panic|stall`, makes that media
//! worker panic or stop turning. Release builds have no such route (404 like any unknown path).

use std::sync::Arc;

use axum::Router;

use crate::http::AppState;

#[cfg(not(debug_assertions))]
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
}

#[cfg(debug_assertions)]
pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/debug/fault", axum::routing::post(inject::fault))
}

#[cfg(debug_assertions)]
mod inject {
    use std::collections::HashMap;
    use std::sync::Arc;

    use axum::extract::{Query, State};
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use tracing::warn;

    use crate::http::AppState;
    use crate::worker::Fault;

    pub async fn fault(
        State(app): State<Arc<AppState>>,
        headers: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> Response {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let allowed = token
            .and_then(|t| pylon_auth::verify(t.trim(), &app.keys, now).ok())
            .is_some_and(|c| c.video().room_create);
        if !allowed {
            return (StatusCode::UNAUTHORIZED, "a token with roomCreate is required").into_response();
        }
        let kind = match q.get("kind").map(String::as_str) {
            Some("panic") => Fault::Panic,
            Some("stall") => Fault::Stall,
            _ => return (StatusCode::BAD_REQUEST, "kind must be panic or stall").into_response(),
        };
        let worker = q.get("worker").and_then(|w| w.parse::<usize>().ok());
        let Some(handle) = worker.and_then(|w| app.node.workers.get(w)) else {
            return (StatusCode::BAD_REQUEST, "worker must name a media worker").into_response();
        };
        warn!(worker = handle.id, ?kind, "fault injection requested");
        handle.fault(kind);
        (StatusCode::OK, "injected").into_response()
    }
}
