//! Signalling on the shard: join, resume, and every request a client sends after joining.

use std::collections::HashMap;
use std::time::Instant;

use livekit_protocol as lk;
use lk::signal_request::Message as Req;
use lk::signal_response::Message as Resp;
use serde::Deserialize;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::Candidate;
use tracing::{debug, info, warn};

use crate::config::{PING_INTERVAL_SECS, PING_TIMEOUT_SECS};
use crate::ids::{ParticipantKey, ParticipantSid, SessionId, TrackSid};
use crate::participant::{Channels, Participant, PcKind, PendingTrack, SubscriberNegotiation};
use crate::room::Room;
use crate::shard::{leave_msg, update, JoinError, JoinParams, Output, ResumeParams, Shard};

/// Codecs offered to publishers in JoinResponse, most preferred first.
const PUBLISH_CODECS: [&str; 5] = ["audio/opus", "video/VP8", "video/H264", "video/VP9", "video/AV1"];

#[derive(Deserialize)]
struct CandidateInit {
    #[serde(default)]
    candidate: String,
}

impl Shard {
    /// Admit a participant. On success the JoinResponse and the first subscriber offer are
    /// queued for `params.session`.
    pub fn join(&mut self, now: Instant, params: JoinParams) -> Result<ParticipantSid, JoinError> {
        let unix_ms = self.unix_ms(now);
        if !self.rooms.contains_key(&params.room) {
            let sid = self.mint_room_sid();
            let room = Room::new(params.room.clone(), sid, self.config.room.clone(), now, unix_ms);
            info!(room = %params.room, sid = %room.sid, "room created");
            self.rooms.insert(params.room.clone(), room);
            let info = self.room_info(&params.room);
            self.webhook(now, crate::shard::event::ROOM_STARTED, info, None, None);
        }
        let duplicate = self.find_identity(&params.room, &params.identity);
        let room = &self.rooms[&params.room];
        if duplicate.is_none() && room.is_full() {
            return Err(JoinError::RoomFull);
        }
        let publisher = self.new_peer(now)?;
        let subscriber = self.new_peer(now)?;
        if let Some(old) = duplicate {
            self.remove_participant(
                now,
                old,
                lk::DisconnectReason::DuplicateIdentity,
                Some(lk::leave_request::Action::Disconnect),
            );
        }
        let key = self.next_participant_key();
        let sid = ParticipantSid::generate(&mut self.rng);
        let p = Participant {
            key,
            sid: sid.clone(),
            identity: params.identity,
            name: params.name,
            metadata: params.metadata,
            attributes: params.attributes,
            permission: params.permission,
            kind: params.kind,
            joined_at_ms: unix_ms,
            version: 1,
            room: params.room.clone(),
            protocol: params.protocol,
            auto_subscribe: params.auto_subscribe,
            session: Some(params.session),
            session_lost_at: None,
            active: false,
            publisher,
            subscriber,
            pending_tracks: Vec::new(),
            tracks: Vec::new(),
            downtracks: Default::default(),
            negotiation: SubscriberNegotiation::default(),
            pub_channels: Channels::default(),
            sub_channels: Channels::default(),
            last_reliable_seq: 0,
            last_rx: now,
            subscribe_allow: None,
            unmatched_media: Vec::new(),
            warned_data: false,
        };
        info!(room = %p.room, participant = %sid, identity = %p.identity, "participant joined");
        self.participants.insert(key, p);
        self.sessions.insert(params.session, key);
        self.remember_ufrag(key, PcKind::Publisher);
        self.remember_ufrag(key, PcKind::Subscriber);
        let room = self.rooms.get_mut(&params.room).expect("room inserted above");
        room.add(key);
        // participant_joined is sent when the participant becomes active (media connected),
        // as LiveKit does; one that never connects gets participant_connection_aborted only.
        let join = self.join_response(key);
        self.send(Some(params.session), Resp::Join(join));
        let p = &self.participants[&key];
        let (can_subscribe, hidden, info) = (p.permission.can_subscribe, p.permission.hidden, p.info());
        if can_subscribe {
            self.negotiate(key);
        }
        if !hidden {
            self.broadcast(&params.room, update(vec![info]), Some(key));
        }
        self.drain_dirty(now);
        Ok(sid)
    }

    fn find_identity(
        &self,
        room: &crate::ids::RoomName,
        identity: &crate::ids::ParticipantIdentity,
    ) -> Option<ParticipantKey> {
        let r = self.rooms.get(room)?;
        r.participants
            .iter()
            .copied()
            .find(|k| self.participants.get(k).is_some_and(|p| &p.identity == identity))
    }

    fn num_publishers(&self, room: &Room) -> u32 {
        room.participants
            .iter()
            .filter(|k| self.participants.get(k).is_some_and(|p| !p.tracks.is_empty()))
            .count() as u32
    }

    pub(crate) fn room_info(&self, room: &crate::ids::RoomName) -> Option<lk::Room> {
        let r = self.rooms.get(room)?;
        Some(r.info(self.num_publishers(r)))
    }

    pub(crate) fn others_info(
        &self,
        key: ParticipantKey,
        room: &crate::ids::RoomName,
    ) -> Vec<lk::ParticipantInfo> {
        let Some(r) = self.rooms.get(room) else {
            return vec![];
        };
        r.participants
            .iter()
            .filter(|k| **k != key)
            .filter_map(|k| self.participants.get(k))
            .filter(|p| !p.permission.hidden)
            .map(Participant::info)
            .collect()
    }

    fn join_response(&self, key: ParticipantKey) -> lk::JoinResponse {
        let p = &self.participants[&key];
        let info = self.server_info();
        lk::JoinResponse {
            room: self.room_info(&p.room),
            participant: Some(p.info()),
            other_participants: self.others_info(key, &p.room),
            server_version: info.version.clone(),
            ice_servers: vec![],
            subscriber_primary: p.permission.can_subscribe,
            server_region: info.region.clone(),
            ping_timeout: PING_TIMEOUT_SECS,
            ping_interval: PING_INTERVAL_SECS,
            server_info: Some(info),
            enabled_publish_codecs: PUBLISH_CODECS
                .iter()
                .map(|m| lk::Codec {
                    mime: m.to_string(),
                    fmtp_line: String::new(),
                })
                .collect(),
            fast_publish: p.permission.can_publish,
            ..Default::default()
        }
    }

    /// Re-attach a participant whose WebSocket dropped (`reconnect=1`). An unknown sid gets
    /// Leave with action RECONNECT so the client does a full join.
    pub fn resume(&mut self, now: Instant, params: ResumeParams) {
        let key = self.rooms.get(&params.room).and_then(|r| {
            r.participants.iter().copied().find(|k| {
                self.participants
                    .get(k)
                    .is_some_and(|p| p.sid == params.sid && p.identity == params.identity)
            })
        });
        let Some(key) = key else {
            info!(room = %params.room, sid = %params.sid, "resume of unknown participant: asking for a full reconnect");
            self.send(
                Some(params.session),
                leave_msg(
                    lk::DisconnectReason::StateMismatch,
                    lk::leave_request::Action::Reconnect,
                ),
            );
            self.outputs.push_back(Output::Close(params.session));
            return;
        };
        let p = self.participants.get_mut(&key).expect("found above");
        if let Some(old) = p.session.replace(params.session) {
            self.sessions.remove(&old);
            self.outputs.push_back(Output::Close(old));
        }
        p.session_lost_at = None;
        let last_seq = p.last_reliable_seq;
        let room = p.room.clone();
        info!(room = %room, participant = %p.sid, "participant resumed");
        self.sessions.insert(params.session, key);
        let reconnect = lk::ReconnectResponse {
            ice_servers: vec![],
            client_configuration: None,
            server_info: Some(self.server_info()),
            last_message_seq: last_seq,
        };
        self.send(Some(params.session), Resp::Reconnect(reconnect));
        let mut everyone = self.others_info(key, &room);
        everyone.push(self.participants[&key].info());
        self.send(Some(params.session), update(everyone));
        if let Some(info) = self.room_info(&room) {
            self.send(
                Some(params.session),
                Resp::RoomUpdate(lk::RoomUpdate { room: Some(info) }),
            );
        }
        let p = self.participants.get_mut(&key).expect("found above");
        if p.permission.can_subscribe {
            p.negotiation.pending = None;
            p.negotiation.ice_restart = true;
            self.negotiate(key);
        }
        self.drain_dirty(now);
    }

    /// One decoded request from a session.
    pub fn signal(&mut self, now: Instant, session: SessionId, req: lk::SignalRequest) {
        let Some(key) = self.sessions.get(&session).copied() else {
            debug!(%session, "request from a session without participant; ignored");
            return;
        };
        let Some(msg) = req.message else {
            return self.protocol_violation(now, session, "empty signal request");
        };
        match msg {
            Req::Offer(sd) => self.on_publisher_offer(now, key, sd),
            Req::Answer(sd) => self.on_subscriber_answer(now, key, sd),
            Req::Trickle(t) => self.on_trickle(key, t),
            Req::AddTrack(t) => self.on_add_track(now, key, t),
            Req::Mute(m) => self.on_mute(key, m),
            Req::Subscription(s) => self.on_update_subscription(now, key, s),
            Req::TrackSetting(s) => self.on_track_setting(now, key, s),
            Req::Leave(_) => self.remove_participant(now, key, lk::DisconnectReason::ClientInitiated, None),
            Req::SubscriptionPermission(perm) => self.on_subscription_permission(now, key, perm),
            Req::UpdateMetadata(m) => self.on_update_metadata(key, m),
            Req::Ping(_) => {
                let ms = self.unix_ms(now);
                self.send_to(key, Resp::Pong(ms));
            }
            Req::PingReq(ping) => {
                let pong = lk::Pong {
                    last_ping_timestamp: ping.timestamp,
                    timestamp: self.unix_ms(now),
                };
                self.send_to(key, Resp::PongResp(pong));
            }
            Req::SyncState(_) | Req::Simulate(_) | Req::UpdateLayers(_) => {}
            Req::UpdateAudioTrack(_) | Req::UpdateVideoTrack(_) => {}
            other => {
                debug!(participant = ?key, "unsupported signal request {:?}", std::mem::discriminant(&other))
            }
        }
        self.drain_dirty(now);
    }

    fn on_publisher_offer(&mut self, now: Instant, key: ParticipantKey, sd: lk::SessionDescription) {
        let Some(session) = self.participants.get(&key).and_then(|p| p.session) else {
            return;
        };
        let offer = match SdpOffer::from_sdp_string(&sd.sdp) {
            Ok(o) => o,
            Err(e) => return self.protocol_violation(now, session, &format!("unparseable offer: {e}")),
        };
        let p = self.participants.get_mut(&key).expect("checked above");
        let answer = match p.publisher.rtc.sdp_api().accept_offer(offer) {
            Ok(a) => a,
            Err(e) => return self.protocol_violation(now, session, &format!("offer refused: {e}")),
        };
        let answer = lk::SessionDescription {
            r#type: "answer".into(),
            sdp: answer.to_sdp_string(),
            id: sd.id,
            mid_to_track_id: HashMap::new(),
        };
        self.send(Some(session), Resp::Answer(answer));
        self.remember_ufrag(key, PcKind::Publisher);
        self.drain(now, key, PcKind::Publisher);
    }

    fn on_subscriber_answer(&mut self, now: Instant, key: ParticipantKey, sd: lk::SessionDescription) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let Some((id, pending)) = p.negotiation.pending.take() else {
            debug!(participant = %p.sid, "answer without a pending offer; ignored");
            return;
        };
        if sd.id != 0 && sd.id != id {
            debug!(participant = %p.sid, got = sd.id, want = id, "stale answer; ignored");
            p.negotiation.pending = Some((id, pending));
            return;
        }
        let answer = match SdpAnswer::from_sdp_string(&sd.sdp) {
            Ok(a) => a,
            Err(e) => {
                let session = p.session;
                if let Some(s) = session {
                    self.protocol_violation(now, s, &format!("unparseable answer: {e}"));
                }
                return;
            }
        };
        if let Err(e) = p.subscriber.rtc.sdp_api().accept_answer(pending, answer) {
            warn!(participant = %p.sid, "subscriber answer refused: {e}");
        }
        self.dirty.push((key, PcKind::Subscriber));
        self.request_keyframes_for_new_downtracks(now, key);
        let p = self.participants.get_mut(&key).expect("present");
        if std::mem::take(&mut p.negotiation.again) {
            self.negotiate(key);
        }
    }

    fn on_trickle(&mut self, key: ParticipantKey, t: lk::TrickleRequest) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let Ok(init) = serde_json::from_str::<CandidateInit>(&t.candidate_init) else {
            debug!(participant = %p.sid, "trickle with malformed candidate JSON; ignored");
            return;
        };
        if init.candidate.is_empty() {
            return;
        }
        let pc = if t.target == lk::SignalTarget::Subscriber as i32 {
            PcKind::Subscriber
        } else {
            PcKind::Publisher
        };
        match Candidate::from_sdp_string(&init.candidate) {
            Ok(c) => p.peer_mut(pc).rtc.add_remote_candidate(c),
            Err(e) => debug!(participant = %p.sid, "unusable remote candidate: {e}"),
        }
    }

    fn on_add_track(&mut self, now: Instant, key: ParticipantKey, req: lk::AddTrackRequest) {
        let sid = TrackSid::generate(&mut self.rng);
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let source = lk::TrackSource::try_from(req.source).unwrap_or(lk::TrackSource::Unknown);
        if !p.may_publish(source) {
            info!(participant = %p.sid, ?source, "add track refused: not allowed");
            let rr = lk::RequestResponse {
                request_id: 0,
                reason: lk::request_response::Reason::NotAllowed as i32,
                message: "does not have permission to publish".into(),
                request: Some(lk::request_response::Request::AddTrack(req)),
            };
            let session = p.session;
            return self.send(session, Resp::RequestResponse(rr));
        }
        let is_video = req.r#type == lk::TrackType::Video as i32;
        let mime = mime_for(is_video, req.simulcast_codecs.first().map(|c| c.codec.as_str()));
        let codecs = vec![lk::SimulcastCodecInfo {
            mime_type: mime.clone(),
            cid: req.cid.clone(),
            layers: req.layers.clone(),
            ..Default::default()
        }];
        let info = lk::TrackInfo {
            sid: sid.as_str().to_string(),
            r#type: req.r#type,
            name: req.name.clone(),
            muted: req.muted,
            width: req.width,
            height: req.height,
            simulcast: req.layers.len() > 1,
            disable_dtx: req.disable_dtx,
            source: req.source,
            layers: req.layers.clone(),
            mime_type: mime,
            codecs,
            stereo: req.stereo,
            disable_red: req.disable_red,
            encryption: req.encryption,
            stream: req.stream.clone(),
            audio_features: req.audio_features.clone(),
            backup_codec_policy: req.backup_codec_policy,
            ..Default::default()
        };
        debug!(participant = %p.sid, cid = %req.cid, track = %sid, "track pending");
        p.pending_tracks.push(PendingTrack {
            cid: req.cid.clone(),
            info: info.clone(),
        });
        let session = p.session;
        self.send(
            session,
            Resp::TrackPublished(lk::TrackPublishedResponse {
                cid: req.cid,
                track: Some(info),
            }),
        );
        self.match_unmatched_media(now, key);
    }

    fn on_mute(&mut self, key: ParticipantKey, m: lk::MuteTrackRequest) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let Some(i) = p.track_by_sid(&m.sid) else {
            debug!(participant = %p.sid, track = %m.sid, "mute of unknown track; ignored");
            return;
        };
        if p.tracks[i].info.muted == m.muted {
            return;
        }
        p.tracks[i].info.muted = m.muted;
        p.bump_version();
        self.broadcast_participant(key);
    }

    pub(crate) fn on_update_subscription(
        &mut self,
        now: Instant,
        key: ParticipantKey,
        s: lk::UpdateSubscription,
    ) {
        let sids = s
            .track_sids
            .iter()
            .chain(s.participant_tracks.iter().flat_map(|pt| pt.track_sids.iter()));
        let targets: Vec<(ParticipantKey, crate::participant::TrackKey, String)> = sids
            .filter_map(|sid| {
                let t = TrackSid::parse(sid)?;
                let (pk, tk) = *self.tracks.get(&t)?;
                Some((pk, tk, sid.clone()))
            })
            .collect();
        for (publisher, tkey, sid) in targets {
            if !s.subscribe {
                self.unsubscribe(key, tkey);
                continue;
            }
            if self.may_subscribe(key, publisher, tkey) {
                self.subscribe(now, key, publisher, tkey);
            } else {
                let pub_sid = self.participants[&publisher].sid.as_str().to_string();
                let upd = lk::SubscriptionPermissionUpdate {
                    participant_sid: pub_sid,
                    track_sid: sid,
                    allowed: false,
                };
                self.send_to(key, Resp::SubscriptionPermissionUpdate(upd));
            }
        }
    }

    fn on_track_setting(&mut self, now: Instant, key: ParticipantKey, s: lk::UpdateTrackSettings) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let mut wake = Vec::new();
        for sid in &s.track_sids {
            if let Some(dt) = p.downtracks.values_mut().find(|d| d.track_sid.as_str() == sid) {
                if dt.disabled != s.disabled {
                    dt.disabled = s.disabled;
                    dt.forwarder.set_target(if s.disabled { None } else { Some(0) });
                    if !s.disabled {
                        wake.push((dt.publisher, dt.track));
                    }
                }
            }
        }
        for (publisher, tkey) in wake {
            self.request_keyframe(now, publisher, tkey);
        }
    }

    fn on_subscription_permission(
        &mut self,
        now: Instant,
        key: ParticipantKey,
        perm: lk::SubscriptionPermission,
    ) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        p.subscribe_allow = Some(perm);
        let pub_sid = p.sid.as_str().to_string();
        let subs: Vec<(ParticipantKey, crate::participant::TrackKey, String)> = p
            .tracks
            .iter()
            .flat_map(|t| {
                t.subscribers
                    .iter()
                    .map(move |s| (*s, t.key, t.sid.as_str().to_string()))
            })
            .collect();
        for (sub, tkey, tsid) in subs {
            if !self.may_subscribe(sub, key, tkey) {
                self.unsubscribe(sub, tkey);
                let upd = lk::SubscriptionPermissionUpdate {
                    participant_sid: pub_sid.clone(),
                    track_sid: tsid,
                    allowed: false,
                };
                self.send_to(sub, Resp::SubscriptionPermissionUpdate(upd));
            }
        }
        self.auto_subscribe_to_publisher(now, key);
    }

    fn on_update_metadata(&mut self, key: ParticipantKey, m: lk::UpdateParticipantMetadata) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let request_id = m.request_id;
        let within_limits = crate::limits::check_metadata(&m.metadata)
            .and_then(|_| crate::limits::check_name(&m.name))
            .and_then(|_| crate::limits::check_attributes(&p.attributes, &m.attributes));
        let ok = p.permission.can_update_metadata && within_limits.is_ok();
        if ok {
            if !m.metadata.is_empty() {
                p.metadata = m.metadata.clone();
            }
            if !m.name.is_empty() {
                p.name = m.name.clone();
            }
            for (k, v) in &m.attributes {
                if v.is_empty() {
                    p.attributes.remove(k);
                } else {
                    p.attributes.insert(k.clone(), v.clone());
                }
            }
            p.bump_version();
        }
        let (reason, message) = match (p.permission.can_update_metadata, within_limits) {
            (false, _) => (
                lk::request_response::Reason::NotAllowed,
                "does not have permission to update own metadata".to_string(),
            ),
            (true, Err(e)) => (lk::request_response::Reason::LimitExceeded, e.to_string()),
            (true, Ok(())) => (lk::request_response::Reason::Ok, String::new()),
        };
        let wants_ack = !ok || p.protocol >= 15;
        let session = p.session;
        if ok {
            self.broadcast_participant(key);
        }
        if wants_ack {
            let rr = lk::RequestResponse {
                request_id,
                reason: reason as i32,
                message,
                request: Some(lk::request_response::Request::UpdateMetadata(m)),
            };
            self.send(session, Resp::RequestResponse(rr));
        }
    }
}

fn mime_for(video: bool, codec: Option<&str>) -> String {
    match (video, codec.map(str::to_ascii_lowercase).as_deref()) {
        (false, _) => "audio/opus".into(),
        (true, Some("h264")) => "video/H264".into(),
        (true, Some("vp9")) => "video/VP9".into(),
        (true, Some("av1")) => "video/AV1".into(),
        (true, _) => "video/VP8".into(),
    }
}
