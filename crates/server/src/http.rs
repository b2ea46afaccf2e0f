//! The HTTP edge: health, `/rtc` signalling WebSocket, `/rtc/validate`, CORS.
//!
//! Every refusal happens here, before any WebSocket upgrade, with LiveKit's status codes
//! (livekit-protocol.md §1.5) and a plain-text body. Successful joins hand the socket to
//! [`crate::session`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use pylon_auth::{Claims, KeySet, TokenError};
use pylon_core::client::ClientTraits;
use pylon_core::ids::{ParticipantIdentity, ParticipantSid, RoomName, SessionId};
use pylon_core::{JoinParams, ResumeParams};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::health::Health;
use crate::node::Node;
use crate::session;
use crate::worker::SESSION_QUEUE;

pub struct AppState {
    pub keys: KeySet,
    /// `/rtc/v1` is served (`rtc.single_peer_connection`); otherwise it answers 404 and the
    /// SDKs fall back to `/rtc`.
    pub single_pc: bool,
    pub node: Arc<Node>,
    pub health: Arc<Health>,
    pub next_session: AtomicU64,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(health))
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .merge(crate::fault::router())
        .route("/rtc", get(rtc))
        .route("/rtc/validate", get(validate))
        .route("/rtc/v1", get(rtc_v1))
        .route("/rtc/v1/validate", get(validate_v1))
        .route(
            "/twirp/livekit.RoomService/{method}",
            axum::routing::post(crate::api::twirp),
        )
        .fallback(not_found)
        .layer(middleware::from_fn(cors))
        .with_state(state)
}

/// Alive unless a media worker died or stopped turning (then 503 until the process exits).
async fn health(State(app): State<Arc<AppState>>) -> Response {
    if app.health.alive() {
        (StatusCode::OK, "OK").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "a media worker failed").into_response()
    }
}

/// Ready for new clients: alive, not draining, (with a region) registered in the region's
/// directory, and not full (`limit:`). Kubernetes stops sending clients to a node that is not
/// ready; its rooms go on.
async fn ready(State(app): State<Arc<AppState>>) -> Response {
    match app.node.unready(&app.health) {
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
        None => (StatusCode::OK, "OK").into_response(),
    }
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// Permissive CORS as LiveKit's server has it: browsers call `/rtc/validate` cross-origin.
async fn cors(req: Request, next: Next) -> Response {
    let preflight = req.method() == Method::OPTIONS;
    let mut resp = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    if preflight {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("OPTIONS, HEAD, GET, POST, PATCH, DELETE"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("*"),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    }
    resp
}

/// A refusal before upgrade: status and plain-text body, logged once.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    msg: String,
}

impl Refusal {
    fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        Self {
            status,
            msg: msg.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.msg,
        )
            .into_response()
    }
}

impl From<TokenError> for Refusal {
    fn from(e: TokenError) -> Self {
        Refusal::new(StatusCode::UNAUTHORIZED, e.to_string())
    }
}

/// What a valid `/rtc` request asks for.
struct RtcRequest {
    claims: Claims,
    room: RoomName,
    identity: ParticipantIdentity,
    auto_subscribe: bool,
    protocol: i32,
    resume: Option<ParticipantSid>,
    client: ClientTraits,
    /// `/rtc/v1`: one peer connection, and the offer that came with the join request.
    single_pc: bool,
    publisher_offer: Option<(String, u32)>,
}

/// Which signalling path a request came on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// `/rtc`: dual peer connection, the join in query parameters.
    V0,
    /// `/rtc/v1`: single peer connection, the join in the `join_request` parameter.
    V1,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn flag(q: &HashMap<String, String>, name: &str) -> Option<bool> {
    q.get(name).map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Token from `Authorization: Bearer …` (which must be Bearer if present) or `access_token`.
fn token<'a>(headers: &'a HeaderMap, q: &'a HashMap<String, String>) -> Result<&'a str, Refusal> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| Refusal::new(StatusCode::UNAUTHORIZED, "invalid authorization header"))?;
        return v.strip_prefix("Bearer ").map(str::trim).ok_or_else(|| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                "invalid authorization header. Must start with Bearer",
            )
        });
    }
    q.get("access_token")
        .map(String::as_str)
        .ok_or_else(|| Refusal::new(StatusCode::UNAUTHORIZED, "no authorization token provided"))
}

fn parse_rtc(
    keys: &KeySet,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    path: Path,
) -> Result<RtcRequest, Refusal> {
    let claims = pylon_auth::verify(token(headers, q)?, keys, unix_now())?;
    let video = claims.video();
    if !video.room_join {
        return Err(Refusal::new(StatusCode::UNAUTHORIZED, "permissions denied"));
    }
    if video.room.is_empty() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "room name is missing from the token",
        ));
    }
    if claims.identity().is_empty() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "participant identity is missing from the token",
        ));
    }
    pylon_core::limits::check_room_name(&video.room)
        .and_then(|_| pylon_core::limits::check_identity(claims.identity()))
        .and_then(|_| pylon_core::limits::check_name(&claims.name))
        .and_then(|_| pylon_core::limits::check_metadata(&claims.metadata))
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    if path == Path::V1 {
        return parse_v1(claims, headers, q);
    }
    let resume = match flag(q, "reconnect") {
        Some(true) => {
            let sid = q.get("sid").and_then(|s| ParticipantSid::parse(s));
            Some(sid.ok_or_else(|| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "reconnect without a valid participant sid",
                )
            })?)
        }
        _ => None,
    };
    let protocol = match q.get("protocol") {
        Some(p) => p
            .parse()
            .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "protocol must be an integer"))?,
        None => 0,
    };
    Ok(RtcRequest {
        room: RoomName::new(video.room.clone()),
        identity: ParticipantIdentity::new(claims.identity()),
        auto_subscribe: flag(q, "auto_subscribe").unwrap_or(true),
        protocol,
        resume,
        // ClientInfo's browser as livekit-client puts it in the query, else the User-Agent's.
        client: ClientTraits::of(
            q.get("browser").map(String::as_str),
            headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()),
        ),
        claims,
        single_pc: false,
        publisher_offer: None,
    })
}

/// The rest of a `/rtc/v1` request, from its `join_request` (`pylon_core::join_request`):
/// settings and client info as the join request has them (an absent `auto_subscribe` is
/// false there, as LiveKit reads it), and the publisher offer, which must parse.
fn parse_v1(claims: Claims, headers: &HeaderMap, q: &HashMap<String, String>) -> Result<RtcRequest, Refusal> {
    let param = q.get("join_request").map(String::as_str).unwrap_or_default();
    let jr = pylon_core::join_request::decode(param)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let resume = match jr.reconnect {
        true => Some(ParticipantSid::parse(&jr.participant_sid).ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "reconnect without a valid participant sid",
            )
        })?),
        false => None,
    };
    let publisher_offer = match jr.publisher_offer {
        Some(o) if o.r#type == "offer" => {
            pylon_core::limits::check_offer_sections(&o.sdp).map_err(|e| {
                Refusal::new(StatusCode::BAD_REQUEST, format!("publisher offer refused: {e}"))
            })?;
            str0m::change::SdpOffer::from_sdp_string(&o.sdp).map_err(|e| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("cannot parse publisher offer: {e}"),
                )
            })?;
            Some((o.sdp, o.id))
        }
        Some(o) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("publisher offer of type {:?}", o.r#type),
            ))
        }
        None => None,
    };
    let info = jr.client_info.unwrap_or_default();
    let browser = (!info.browser.is_empty()).then_some(info.browser.as_str());
    let video = claims.video();
    Ok(RtcRequest {
        room: RoomName::new(video.room.clone()),
        identity: ParticipantIdentity::new(claims.identity()),
        auto_subscribe: jr.connection_settings.is_some_and(|s| s.auto_subscribe),
        protocol: info.protocol,
        resume,
        client: ClientTraits::of(
            browser,
            headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()),
        ),
        claims,
        single_pc: true,
        publisher_offer,
    })
}

async fn validate(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    validate_on(&app, &headers, &q, Path::V0)
}

/// `/rtc/v1/validate`: livekit-client asks it after a failed `/rtc/v1` upgrade, and falls
/// back to `/rtc` on its 404 — so it stays 404 while `/rtc/v1` is not served.
async fn validate_v1(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !app.single_pc {
        return not_found().await;
    }
    validate_on(&app, &headers, &q, Path::V1)
}

fn validate_on(app: &AppState, headers: &HeaderMap, q: &HashMap<String, String>, path: Path) -> Response {
    match parse_rtc(&app.keys, headers, q, path) {
        Ok(_) => (StatusCode::OK, "success").into_response(),
        Err(r) => {
            info!(status = %r.status, "validate refused: {}", r.msg);
            r.into_response()
        }
    }
}

async fn rtc(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    upgrade(app, headers, q, ws, Path::V0).await
}

/// `/rtc/v1`, single peer connection signalling; 404 (the SDKs fall back to `/rtc`) unless
/// `rtc.single_peer_connection` is on.
async fn rtc_v1(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !app.single_pc {
        return not_found().await;
    }
    upgrade(app, headers, q, ws, Path::V1).await
}

async fn upgrade(
    app: Arc<AppState>,
    headers: HeaderMap,
    q: HashMap<String, String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    path: Path,
) -> Response {
    let req = match parse_rtc(&app.keys, &headers, &q, path) {
        Ok(r) => r,
        Err(r) => {
            info!(status = %r.status, "join refused: {}", r.msg);
            return r.into_response();
        }
    };
    let Ok(ws) = ws else {
        return not_found().await;
    };
    let session = SessionId(app.next_session.fetch_add(1, Ordering::Relaxed));
    let (tx, rx) = mpsc::channel(SESSION_QUEUE);
    let worker = match req.resume.clone() {
        Some(sid) => {
            let params = ResumeParams {
                session,
                room: req.room,
                identity: req.identity,
                sid,
            };
            app.node.resume(params, tx)
        }
        None => match join(&app, session, req, tx).await {
            Ok(w) => w,
            Err(r) => {
                warn!(status = %r.status, "join failed: {}", r.msg);
                return r.into_response();
            }
        },
    };
    let guard = session::CloseGuard::new(worker, session);
    let failing = app.health.subscribe();
    ws.read_buffer_size(session::READ_BUFFER)
        .write_buffer_size(session::WRITE_BUFFER)
        .max_message_size(session::MAX_MESSAGE)
        .max_frame_size(session::MAX_MESSAGE)
        .on_upgrade(move |socket| session::run(socket, session, rx, guard, failing))
}

async fn join(
    app: &AppState,
    session: SessionId,
    req: RtcRequest,
    out: mpsc::Sender<crate::worker::SessionEvent>,
) -> Result<crate::worker::WorkerHandle, Refusal> {
    let grant = req.claims.video();
    let params = JoinParams {
        session,
        room: req.room,
        identity: req.identity,
        name: req.claims.name.clone(),
        metadata: req.claims.metadata.clone(),
        attributes: req.claims.attributes.clone(),
        permission: grant.permission(),
        kind: participant_kind(&req.claims.kind),
        auto_subscribe: req.auto_subscribe,
        protocol: req.protocol,
        placement: Default::default(),
        client: req.client,
        single_pc: req.single_pc,
        publisher_offer: req.publisher_offer,
    };
    app.node.join(params, out).await.map_err(|e| {
        let status = match e {
            pylon_core::JoinError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Refusal::new(status, e.to_string())
    })
}

/// The token's `kind` claim (lowercase LiveKit enum name) as `ParticipantInfo.Kind`.
fn participant_kind(kind: &str) -> i32 {
    use livekit_protocol::participant_info::Kind;
    let kind = match kind {
        "ingress" => Kind::Ingress,
        "egress" => Kind::Egress,
        "sip" => Kind::Sip,
        "agent" => Kind::Agent,
        _ => Kind::Standard,
    };
    kind as i32
}
