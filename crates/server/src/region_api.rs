//! The Room API across a region: a request on any node covers the room on every node.
//!
//! The node that receives a request asks the region's directory which nodes hold the room
//! (every live node for `ListRooms`), answers its own part, forwards the same request
//! (same body, same bearer token) to the others' Room API with the `x-pylon-scope: node`
//! header — "answer for your own participants only" — and merges: room lists and participant
//! lists are summed and concatenated; a request about one participant takes the answer of the
//! node hosting it; `DeleteRoom` and `UpdateRoomMetadata` reach every node holding the room
//! (and the room's record). While Redis is unreachable, a node answers for itself.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use livekit_protocol as lk;
use pylon_auth::Claims;
use pylon_cluster::NodeId;
use pylon_core::ids::RoomName;
use tracing::debug;

use crate::api::{decode, encode, encoding, handle, Encoding, TwirpCode, TwirpError};
use crate::cluster::Cluster;
use crate::http::AppState;

/// Set on a forwarded request: the receiving node answers for itself only.
pub const SCOPE_HEADER: &str = "x-pylon-scope";

/// How long a forwarded request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest answer accepted from another node.
const MAX_ANSWER: usize = 16 << 20;

/// One node's answer.
struct Answer {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

impl Answer {
    fn ok(&self) -> bool {
        self.status.is_success()
    }

    fn into_response(self) -> Response {
        let mut r = (self.status, self.body).into_response();
        if let Some(ct) = self.content_type {
            r.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        r
    }
}

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>()
}

/// The room a request is about (None for `ListRooms`, `CreateRoom` and undecodable bodies,
/// which the local handler refuses precisely).
fn room_of(method: &str, enc: Encoding, body: &[u8]) -> Option<RoomName> {
    let room = match method {
        "DeleteRoom" => decode::<lk::DeleteRoomRequest>(enc, body).ok()?.room,
        "ListParticipants" => decode::<lk::ListParticipantsRequest>(enc, body).ok()?.room,
        "GetParticipant" | "RemoveParticipant" => decode::<lk::RoomParticipantIdentity>(enc, body).ok()?.room,
        "MutePublishedTrack" => decode::<lk::MuteRoomTrackRequest>(enc, body).ok()?.room,
        "UpdateParticipant" => decode::<lk::UpdateParticipantRequest>(enc, body).ok()?.room,
        "UpdateSubscriptions" => decode::<lk::UpdateSubscriptionsRequest>(enc, body).ok()?.room,
        "SendData" => decode::<lk::SendDataRequest>(enc, body).ok()?.room,
        "UpdateRoomMetadata" => decode::<lk::UpdateRoomMetadataRequest>(enc, body).ok()?.room,
        "MoveParticipant" => decode::<lk::MoveParticipantRequest>(enc, body).ok()?.room,
        _ => return None,
    };
    (!room.is_empty()).then(|| RoomName::new(room))
}

/// Answer a Room API request for the whole region.
pub async fn handle_region(
    app: &AppState,
    cluster: &Cluster,
    method: &str,
    claims: &Claims,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, TwirpError> {
    // A body the local handler cannot read is refused by it, precisely.
    let Ok(enc) = encoding(headers) else {
        return handle(app, method, claims, headers, body).await;
    };
    let room = room_of(method, enc, body);
    // Which nodes to ask (None: this node alone).
    let nodes: Option<Vec<NodeId>> = match (method, &room) {
        ("ListRooms", _) => cluster.live_nodes().await,
        (_, Some(room)) => cluster.room_nodes(room).await,
        _ => None,
    };
    let me = cluster.node().clone();
    let others: Vec<NodeId> = nodes
        .unwrap_or_default()
        .into_iter()
        .filter(|n| *n != me)
        .collect();
    if others.is_empty() {
        return handle(app, method, claims, headers, body).await;
    }
    let forwards = others
        .iter()
        .map(|n| forward(cluster, n, method, headers, Bytes::copy_from_slice(body)));
    let (local, remote) = tokio::join!(
        handle(app, method, claims, headers, body),
        futures_util::future::join_all(forwards)
    );
    let mut answers = vec![local_answer(local).await];
    answers.extend(remote.into_iter().flatten());
    if let (Some(room), "DeleteRoom" | "UpdateRoomMetadata") = (&room, method) {
        cluster.room_changed(method, room, enc, body).await;
    }
    Ok(merge(method, enc, answers))
}

async fn local_answer(r: Result<Response, TwirpError>) -> Answer {
    let resp = r.unwrap_or_else(IntoResponse::into_response);
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let body = axum::body::to_bytes(resp.into_body(), MAX_ANSWER)
        .await
        .unwrap_or_default();
    Answer {
        status,
        content_type,
        body,
    }
}

/// The request, sent to `node`'s Room API scoped to that node. None if the node cannot be
/// reached (it may have just died: its participants are gone with it).
async fn forward(
    cluster: &Cluster,
    node: &NodeId,
    method: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Option<Answer> {
    let addr = cluster.api_addr(node)?;
    let uri = format!("http://{addr}/twirp/livekit.RoomService/{method}");
    let mut req = hyper::Request::post(uri).header(SCOPE_HEADER, "node");
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(v) = headers.get(&name) {
            req = req.header(name, v);
        }
    }
    let req = req.body(Full::new(body)).ok()?;
    let resp = match tokio::time::timeout(FORWARD_TIMEOUT, cluster.http.request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            debug!(peer = %node, "forwarding a room api request failed: {e}");
            return None;
        }
        Err(_) => {
            debug!(peer = %node, "forwarding a room api request timed out");
            return None;
        }
    };
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let body = tokio::time::timeout(FORWARD_TIMEOUT, resp.into_body().collect())
        .await
        .ok()?
        .ok()?
        .to_bytes();
    (body.len() <= MAX_ANSWER).then_some(Answer {
        status,
        content_type,
        body,
    })
}

/// One answer from several nodes' answers (this node's first).
fn merge(method: &str, enc: Encoding, answers: Vec<Answer>) -> Response {
    match method {
        "ListRooms" => {
            let mut rooms: Vec<lk::Room> = Vec::new();
            for a in answers.iter().filter(|a| a.ok()) {
                let Ok(r) = decode::<lk::ListRoomsResponse>(enc, &a.body) else {
                    continue;
                };
                for room in r.rooms {
                    match rooms.iter_mut().find(|x| x.name == room.name) {
                        Some(x) => {
                            x.num_participants += room.num_participants;
                            x.num_publishers += room.num_publishers;
                        }
                        None => rooms.push(room),
                    }
                }
            }
            rooms.sort_by(|a, b| a.name.cmp(&b.name));
            encode(enc, &lk::ListRoomsResponse { rooms })
        }
        "ListParticipants" => {
            let mut all: Vec<lk::ParticipantInfo> = Vec::new();
            for a in answers.iter().filter(|a| a.ok()) {
                if let Ok(r) = decode::<lk::ListParticipantsResponse>(enc, &a.body) {
                    for p in r.participants {
                        if !all.iter().any(|x| x.sid == p.sid) {
                            all.push(p);
                        }
                    }
                }
            }
            all.sort_by_key(|p| p.joined_at_ms);
            encode(enc, &lk::ListParticipantsResponse { participants: all })
        }
        // About one participant (its host answers), or the room everywhere (any success).
        _ => {
            let mut first_err = None;
            for a in answers {
                if a.ok() {
                    return a.into_response();
                }
                first_err.get_or_insert(a);
            }
            first_err.map_or_else(
                || TwirpError::new(TwirpCode::Unavailable, "no node answered").into_response(),
                Answer::into_response,
            )
        }
    }
}
