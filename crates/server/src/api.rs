//! The Room API: Twirp `livekit.RoomService` over HTTP POST, protobuf or JSON bodies.
//!
//! Each request is authenticated (Bearer token), authorized with the grant LiveKit checks for
//! that method, decoded into its request message, and handed to the media worker. Errors are
//! Twirp JSON (`{"code","msg"}`) with the Twirp HTTP status, mapped here and only here.

// LiveKit marks fields deprecated that today's SDKs still send; we must read them.
#![allow(deprecated)]

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use livekit_protocol as lk;
use prost::Message;
use pylon_auth::{Claims, VideoGrant};
use std::time::Duration;

use pylon_core::admin::{
    AdminError, AdminRequest, AdminResponse, DataSend, ParticipantUpdate, PermissionUpdate, RoomOptions,
};
use pylon_core::data::{DataKind, Destinations};
use pylon_core::ids::{ParticipantIdentity, RoomName, TrackSid};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::info;

use crate::http::AppState;
use crate::node::NodeError;

/// Largest Room API request body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// Twirp error codes we emit, with their HTTP statuses (twitchtv/twirp spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwirpCode {
    InvalidArgument,
    Malformed,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    BadRoute,
    FailedPrecondition,
    AlreadyExists,
    Internal,
    Unavailable,
}

impl TwirpCode {
    fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::Malformed => "malformed",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::NotFound => "not_found",
            Self::BadRoute => "bad_route",
            Self::FailedPrecondition => "failed_precondition",
            Self::AlreadyExists => "already_exists",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Self::InvalidArgument | Self::Malformed => StatusCode::BAD_REQUEST,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::NotFound | Self::BadRoute => StatusCode::NOT_FOUND,
            Self::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
            Self::AlreadyExists => StatusCode::CONFLICT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// A Twirp error response.
#[derive(Debug)]
pub struct TwirpError {
    code: TwirpCode,
    msg: String,
}

impl TwirpError {
    pub fn new(code: TwirpCode, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
        }
    }
}

impl IntoResponse for TwirpError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.code.as_str(), "msg": self.msg, "meta": {} });
        (
            self.code.status(),
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

impl From<AdminError> for TwirpError {
    fn from(e: AdminError) -> Self {
        let code = match e {
            AdminError::RoomNotFound | AdminError::ParticipantNotFound | AdminError::TrackNotFound => {
                TwirpCode::NotFound
            }
            AdminError::InvalidArgument(_) => TwirpCode::InvalidArgument,
            AdminError::FailedPrecondition(_) => TwirpCode::FailedPrecondition,
            AdminError::AlreadyExists(_) => TwirpCode::AlreadyExists,
        };
        TwirpError::new(code, e.to_string())
    }
}

/// How the body (and so the response) is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    Protobuf,
    Json,
}

pub(crate) fn encoding(headers: &HeaderMap) -> Result<Encoding, TwirpError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media.as_str() {
        "application/protobuf" | "application/x-protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        other => Err(TwirpError::new(
            TwirpCode::BadRoute,
            format!("unexpected Content-Type: {other:?}"),
        )),
    }
}

pub(crate) fn decode<T: Message + Default + DeserializeOwned>(
    enc: Encoding,
    body: &[u8],
) -> Result<T, TwirpError> {
    match enc {
        Encoding::Protobuf => T::decode(body).map_err(|e| {
            TwirpError::new(
                TwirpCode::Malformed,
                format!("the protobuf request could not be decoded: {e}"),
            )
        }),
        Encoding::Json => {
            let body = if body.iter().all(u8::is_ascii_whitespace) {
                b"{}".as_slice()
            } else {
                body
            };
            serde_json::from_slice(body).map_err(|e| {
                TwirpError::new(
                    TwirpCode::Malformed,
                    format!("the json request could not be decoded: {e}"),
                )
            })
        }
    }
}

pub(crate) fn encode<T: Message + Serialize>(enc: Encoding, msg: &T) -> Response {
    match enc {
        Encoding::Protobuf => (
            [(header::CONTENT_TYPE, "application/protobuf")],
            msg.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => match serde_json::to_vec(msg) {
            Ok(v) => ([(header::CONTENT_TYPE, "application/json")], v).into_response(),
            Err(e) => TwirpError::new(TwirpCode::Internal, e.to_string()).into_response(),
        },
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn authenticate(app: &AppState, headers: &HeaderMap) -> Result<Claims, Box<Response>> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(Box::new(
            TwirpError::new(TwirpCode::Unauthenticated, "permissions denied: no token").into_response(),
        ));
    };
    let Some(token) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) else {
        let body = "invalid authorization header. Must start with Bearer ";
        return Err(Box::new((StatusCode::UNAUTHORIZED, body).into_response()));
    };
    pylon_auth::verify(token.trim(), &app.keys, unix_now())
        .map_err(|e| Box::new(TwirpError::new(TwirpCode::Unauthenticated, e.to_string()).into_response()))
}

fn denied() -> TwirpError {
    TwirpError::new(TwirpCode::Unauthenticated, "permissions denied")
}

fn require(ok: bool) -> Result<(), TwirpError> {
    if ok {
        Ok(())
    } else {
        Err(denied())
    }
}

fn require_admin(g: &VideoGrant, room: &str) -> Result<(), TwirpError> {
    require(g.room_admin && !room.is_empty() && g.room == room)
}

pub async fn twirp(
    State(app): State<Arc<AppState>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let claims = match authenticate(&app, &headers) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    // With a region, a request covers the room on every node (unless it was forwarded by
    // another node, which asks for this node's part only).
    let result = match &app.node.cluster {
        Some(c) if !headers.contains_key(crate::region_api::SCOPE_HEADER) => {
            crate::region_api::handle_region(&app, c, &method, &claims, &headers, &body).await
        }
        _ => handle(&app, &method, &claims, &headers, &body).await,
    };
    match result {
        Ok(resp) => resp,
        Err(e) => {
            info!(method, code = e.code.as_str(), "room api error: {}", e.msg);
            e.into_response()
        }
    }
}

pub(crate) async fn handle(
    app: &AppState,
    method: &str,
    claims: &Claims,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, TwirpError> {
    let grant = claims.video();
    let g = &grant;
    if body.len() > MAX_BODY {
        return Err(TwirpError::new(
            TwirpCode::InvalidArgument,
            format!("request body exceeds {MAX_BODY} bytes"),
        ));
    }
    let enc = encoding(headers)?;
    let req = match method {
        "CreateRoom" => {
            require(g.room_create)?;
            let r: lk::CreateRoomRequest = decode(enc, body)?;
            let secs = |s: u32| (s > 0).then(|| Duration::from_secs(s.into()));
            AdminRequest::CreateRoom {
                name: RoomName::new(r.name),
                options: RoomOptions {
                    empty_timeout: secs(r.empty_timeout),
                    departure_timeout: secs(r.departure_timeout),
                    max_participants: (r.max_participants > 0).then_some(r.max_participants),
                    metadata: r.metadata,
                },
                record: None,
            }
        }
        "ListRooms" => {
            require(g.room_list)?;
            let r: lk::ListRoomsRequest = decode(enc, body)?;
            AdminRequest::ListRooms {
                names: r.names.into_iter().map(RoomName::new).collect(),
            }
        }
        "DeleteRoom" => {
            require(g.room_create)?;
            let r: lk::DeleteRoomRequest = decode(enc, body)?;
            AdminRequest::DeleteRoom {
                room: RoomName::new(r.room),
            }
        }
        "ListParticipants" => {
            let r: lk::ListParticipantsRequest = decode(enc, body)?;
            require_admin(g, &r.room)?;
            AdminRequest::ListParticipants {
                room: RoomName::new(r.room),
            }
        }
        "GetParticipant" => {
            let r: lk::RoomParticipantIdentity = decode(enc, body)?;
            require_admin(g, &r.room)?;
            let (room, identity) = who(r);
            AdminRequest::GetParticipant { room, identity }
        }
        "RemoveParticipant" => {
            let r: lk::RoomParticipantIdentity = decode(enc, body)?;
            require_admin(g, &r.room)?;
            let (room, identity) = who(r);
            AdminRequest::RemoveParticipant { room, identity }
        }
        "MutePublishedTrack" => {
            let r: lk::MuteRoomTrackRequest = decode(enc, body)?;
            require_admin(g, &r.room)?;
            AdminRequest::MutePublishedTrack {
                room: RoomName::new(r.room),
                identity: ParticipantIdentity::new(r.identity),
                // A lookup key: a sid we never minted names no track (not found).
                track: TrackSid::new(r.track_sid),
                muted: r.muted,
            }
        }
        "UpdateParticipant" => {
            let r: lk::UpdateParticipantRequest = decode(enc, body)?;
            require_admin(g, &r.room)?;
            let update = ParticipantUpdate {
                metadata: non_empty(r.metadata),
                name: non_empty(r.name),
                attributes: r.attributes,
                permission: r.permission.map(|p| PermissionUpdate {
                    can_publish: p.can_publish,
                    can_subscribe: p.can_subscribe,
                    can_publish_data: p.can_publish_data,
                    can_update_metadata: p.can_update_metadata,
                    hidden: p.hidden,
                    can_publish_sources: p
                        .can_publish_sources
                        .iter()
                        .filter_map(|s| lk::TrackSource::try_from(*s).ok())
                        .collect(),
                }),
            };
            AdminRequest::UpdateParticipant {
                room: RoomName::new(r.room),
                identity: ParticipantIdentity::new(r.identity),
                update: Box::new(update),
            }
        }
        "UpdateSubscriptions" => {
            let r: lk::UpdateSubscriptionsRequest = decode(enc, body)?;
            require_admin(g, &r.room)?;
            let sids = r
                .track_sids
                .iter()
                .chain(r.participant_tracks.iter().flat_map(|pt| pt.track_sids.iter()));
            AdminRequest::UpdateSubscriptions {
                room: RoomName::new(r.room.clone()),
                identity: ParticipantIdentity::new(r.identity.clone()),
                tracks: sids.map(|s| TrackSid::new(s.clone())).collect(),
                subscribe: r.subscribe,
            }
        }
        "SendData" => {
            let r: lk::SendDataRequest = decode(enc, body)?;
            require_admin(g, &r.room)?;
            let kind = if r.kind == lk::data_packet::Kind::Lossy as i32 {
                DataKind::Lossy
            } else {
                DataKind::Reliable
            };
            let data = DataSend {
                kind,
                payload: r.data,
                topic: r.topic,
                to: Destinations {
                    identities: r.destination_identities,
                    sids: r.destination_sids,
                },
                nonce: r.nonce,
            };
            AdminRequest::SendData {
                room: RoomName::new(r.room),
                data: Box::new(data),
            }
        }
        "UpdateRoomMetadata" => {
            let r: lk::UpdateRoomMetadataRequest = decode(enc, body)?;
            require_admin(g, &r.room)?;
            AdminRequest::UpdateRoomMetadata {
                room: RoomName::new(r.room),
                metadata: r.metadata,
            }
        }
        "MoveParticipant" => {
            let r: lk::MoveParticipantRequest = decode(enc, body)?;
            // As LiveKit: admin of the source room, and the destination named in the grant.
            require(
                g.room_admin
                    && !r.room.is_empty()
                    && g.room == r.room
                    && g.destination_room == r.destination_room,
            )?;
            if r.room == r.destination_room {
                return Err(TwirpError::new(
                    TwirpCode::InvalidArgument,
                    "destination room cannot be the same as source room",
                ));
            }
            let (room, identity) = (RoomName::new(r.room), ParticipantIdentity::new(r.identity));
            let get = AdminRequest::GetParticipant {
                room: room.clone(),
                identity: identity.clone(),
            };
            let AdminResponse::Participant(info) = admin(app, get).await? else {
                return Err(TwirpError::new(TwirpCode::Internal, "unexpected worker answer"));
            };
            let token = moved_token(app, claims, &info, &r.destination_room)?;
            AdminRequest::MoveParticipant {
                room,
                identity,
                destination: RoomName::new(r.destination_room),
                token,
                placement: Default::default(),
            }
        }
        other => {
            return Err(TwirpError::new(
                TwirpCode::BadRoute,
                format!("unknown method {other:?}"),
            ))
        }
    };
    Ok(match admin(app, req).await? {
        AdminResponse::Room(m) => encode(enc, &m),
        AdminResponse::Rooms(rooms) => {
            let rooms = rooms.into_iter().map(|s| s.info).collect();
            encode(enc, &lk::ListRoomsResponse { rooms })
        }
        AdminResponse::RoomDeleted => encode(enc, &lk::DeleteRoomResponse {}),
        AdminResponse::Participants(participants) => {
            encode(enc, &lk::ListParticipantsResponse { participants })
        }
        AdminResponse::Participant(m) => encode(enc, &m),
        AdminResponse::ParticipantRemoved => encode(enc, &lk::RemoveParticipantResponse {}),
        AdminResponse::TrackMuted(track) => encode(enc, &lk::MuteRoomTrackResponse { track: Some(track) }),
        AdminResponse::SubscriptionsUpdated => encode(enc, &lk::UpdateSubscriptionsResponse {}),
        AdminResponse::DataSent => encode(enc, &lk::SendDataResponse {}),
        AdminResponse::ParticipantMoved => encode(enc, &lk::MoveParticipantResponse {}),
    })
}

fn who(r: lk::RoomParticipantIdentity) -> (RoomName, ParticipantIdentity) {
    (RoomName::new(r.room), ParticipantIdentity::new(r.identity))
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Apply one request on the node.
async fn admin(app: &AppState, req: AdminRequest) -> Result<AdminResponse, TwirpError> {
    app.node.admin(req).await.map_err(|e| match e {
        NodeError::Admin(e) => e.into(),
        NodeError::Unavailable => TwirpError::new(TwirpCode::Unavailable, "media worker unavailable"),
        NodeError::Region(e) => TwirpError::new(TwirpCode::Unavailable, e),
    })
}

/// How long the token handed to a moved participant is valid (the SDKs' default TTL).
const MOVED_TOKEN_TTL_SECS: i64 = 6 * 3600;

/// A join token for `room` with the participant's current identity, name and permissions,
/// signed with the key the API caller used.
fn moved_token(
    app: &AppState,
    caller: &Claims,
    info: &lk::ParticipantInfo,
    room: &str,
) -> Result<String, TwirpError> {
    let secret = app
        .keys
        .secret(&caller.iss)
        .ok_or_else(|| TwirpError::new(TwirpCode::Internal, "the caller's key is gone"))?;
    let perm = info.permission.clone().unwrap_or_default();
    let now = unix_now();
    let claims = Claims {
        iss: caller.iss.clone(),
        sub: info.identity.clone(),
        nbf: Some(now),
        exp: Some(now + MOVED_TOKEN_TTL_SECS),
        name: info.name.clone(),
        kind: participant_kind_name(info.kind).into(),
        video: Some(VideoGrant {
            room_join: true,
            room: room.to_string(),
            can_publish: Some(perm.can_publish),
            can_subscribe: Some(perm.can_subscribe),
            can_publish_data: Some(perm.can_publish_data),
            can_update_own_metadata: Some(perm.can_update_metadata),
            can_publish_sources: perm
                .can_publish_sources
                .iter()
                .filter_map(|s| lk::TrackSource::try_from(*s).ok())
                .filter_map(|s| match s {
                    lk::TrackSource::Camera => Some("camera"),
                    lk::TrackSource::Microphone => Some("microphone"),
                    lk::TrackSource::ScreenShare => Some("screen_share"),
                    lk::TrackSource::ScreenShareAudio => Some("screen_share_audio"),
                    lk::TrackSource::Unknown => None,
                })
                .map(str::to_string)
                .collect(),
            hidden: perm.hidden,
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(pylon_auth::mint(&claims, secret))
}

/// The token `kind` claim for a `ParticipantInfo.Kind`.
fn participant_kind_name(kind: i32) -> &'static str {
    use lk::participant_info::Kind;
    match Kind::try_from(kind) {
        Ok(Kind::Ingress) => "ingress",
        Ok(Kind::Egress) => "egress",
        Ok(Kind::Sip) => "sip",
        Ok(Kind::Agent) => "agent",
        _ => "standard",
    }
}
