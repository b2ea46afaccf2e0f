//! Signalling on the shard: join, resume, and every command a joined participant sends.

use std::time::Instant;

use livekit_protocol as lk;
use lk::signal_response::Message as Resp;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::Candidate;
use tracing::{debug, info, warn};

use crate::command::{
    AddTrack, MetadataUpdate, QualityRequest, SignalCommand, SubscriptionPermission, TrackSettings,
};
use crate::config::{PING_INTERVAL_SECS, PING_TIMEOUT_SECS};
use crate::forwarder::TOP_LAYER;
use crate::ids::{ParticipantIdentity, ParticipantKey, ParticipantSid, RoomName, SessionId, TrackSid};
use crate::limits;
use crate::negotiation::{AnswerOutcome, SubscriberNegotiation};
use crate::participant::{Channels, Participant, PendingTrack};
use crate::peer::{PcKind, PeerRef};
use crate::shard::{leave_msg, update, JoinError, JoinParams, Output, ResumeParams, Shard};
use crate::single_pc::SinglePcNegotiation;
use crate::track::layer_for_size;

/// Codecs offered to publishers in JoinResponse, most preferred first.
const PUBLISH_CODECS: [&str; 5] = ["audio/opus", "video/VP8", "video/H264", "video/VP9", "video/AV1"];

impl Shard {
    /// Admit a participant. On success the JoinResponse and the first subscriber offer are
    /// queued for `params.session`.
    pub fn join(&mut self, now: Instant, params: JoinParams) -> Result<ParticipantSid, JoinError> {
        let unix_ms = self.unix_ms(now);
        let duplicate = self.find_identity(&params.room, &params.identity);
        let full = self.rooms.get(&params.room).is_some_and(|r| r.is_full());
        if duplicate.is_none() && full {
            return Err(JoinError::RoomFull);
        }
        let publisher = self.peers.build(now, params.client.audio_red, false)?;
        let subscriber = match params.single_pc {
            true => None,
            false => Some(self.peers.build(now, params.client.audio_red, true)?),
        };
        if let Some(old) = duplicate {
            self.remove_participant(
                now,
                old,
                lk::DisconnectReason::DuplicateIdentity,
                Some(lk::leave_request::Action::Disconnect),
            );
        }
        // A session of the identity hosted elsewhere (its host may be dead, its link not yet
        // timed out) leaves too: this one is the newest.
        let newest = lk::ParticipantInfo {
            identity: params.identity.as_str().to_string(),
            joined_at_ms: i64::MAX,
            ..Default::default()
        };
        self.drop_older_mirrors(now, &params.room, &newest);
        // After the replaced session is gone: an instance that ended with it starts again.
        self.ensure_room(now, &params.room, &params.placement);
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
            client: params.client,
            session: Some(params.session),
            session_lost_at: None,
            active: false,
            publisher,
            subscriber,
            pending_tracks: Vec::new(),
            tracks: Vec::new(),
            downtracks: Default::default(),
            negotiation: SubscriberNegotiation::default(),
            single: SinglePcNegotiation {
                initial_offer: params.publisher_offer,
                ..Default::default()
            },
            pub_channels: Channels::default(),
            sub_channels: Channels::default(),
            last_reliable_seq: 0,
            last_rx: now,
            subscribe_allow: None,
            unmatched_media: Vec::new(),
            warned_data: false,
            warned_tracks: false,
            link: Default::default(),
            downlink: Default::default(),
            resend: Default::default(),
            data_tracks: Vec::new(),
            data_subs: Vec::new(),
            last_data_handle: 0,
        };
        info!(room = %p.room, participant = %sid, identity = %p.identity, "participant joined");
        self.participants.insert(key, Box::new(p));
        self.sessions.insert(params.session, key);
        self.remember_ufrag(PeerRef {
            key,
            pc: PcKind::Publisher,
        });
        if !params.single_pc {
            self.remember_ufrag(PeerRef {
                key,
                pc: PcKind::Subscriber,
            });
        }
        self.rooms
            .get_mut(&params.room)
            .expect("room ensured above")
            .add(key);
        // participant_joined is sent when the participant becomes active (media connected),
        // as LiveKit does; one that never connects gets participant_connection_aborted only.
        let room = self.rooms.get_mut(&params.room).expect("room ensured above");
        if room.awaiting.is_empty() {
            self.send_join_response(now, key);
        } else {
            room.joining.push(key);
        }
        let p = &self.participants[&key];
        let (hidden, info) = (p.permission.hidden, p.info(&self.tracks));
        if !hidden {
            self.broadcast(&params.room, update(vec![info]), Some(key));
            self.relay_participant(key);
        }
        self.stats.joins_signalled += 1;
        self.drain_dirty(now);
        Ok(sid)
    }

    pub(crate) fn find_identity(
        &self,
        room: &RoomName,
        identity: &ParticipantIdentity,
    ) -> Option<ParticipantKey> {
        let r = self.rooms.get(room)?;
        r.members
            .iter()
            .copied()
            .find(|k| self.participants.get(k).is_some_and(|p| &p.identity == identity))
    }

    fn num_publishers(&self, room: &crate::room::Room) -> u32 {
        let hosted = room
            .members
            .iter()
            .filter(|k| self.participants.get(k).is_some_and(|p| !p.tracks.is_empty()))
            .count();
        let mirrored = room
            .remotes
            .iter()
            .filter(|k| self.remotes.get(k).is_some_and(|p| !p.tracks.is_empty()))
            .count();
        (hosted + mirrored) as u32
    }

    pub(crate) fn room_info(&self, room: &RoomName) -> Option<lk::Room> {
        let r = self.rooms.get(room)?;
        Some(r.info(self.num_publishers(r)))
    }

    /// Everyone in `room` a participant may see, except `except`: hosted here and mirrored.
    pub(crate) fn others_info(&self, except: ParticipantKey, room: &RoomName) -> Vec<lk::ParticipantInfo> {
        let Some(r) = self.rooms.get(room) else {
            return vec![];
        };
        let hosted = r
            .members
            .iter()
            .filter(|k| **k != except)
            .filter_map(|k| self.participants.get(k))
            .filter(|p| !p.permission.hidden)
            .map(|p| p.info(&self.tracks));
        let mirrored = r
            .remotes
            .iter()
            .filter_map(|k| self.remotes.get(k))
            .map(|m| m.info.clone());
        hosted.chain(mirrored).collect()
    }

    /// The JoinResponse (everyone already in the room, here and at linked places), then the
    /// first subscriber offer.
    pub(crate) fn send_join_response(&mut self, now: Instant, key: ParticipantKey) {
        let Some(p) = self.participants.get(&key) else {
            return;
        };
        let (session, can_subscribe, room) = (p.session, p.permission.can_subscribe, p.room.clone());
        let single_pc = p.single_pc();
        let join = self.join_response(key);
        self.send(session, Resp::Join(join));
        if let Some(table) = self.quality_table(&room) {
            self.send(session, table);
        }
        // Single PC: subscriptions start now, so the answer to the offer that came with the
        // join request (sent right after it) already carries the room's tracks.
        if single_pc && can_subscribe {
            self.auto_subscribe_all(now, key);
        }
        let initial = self
            .participants
            .get_mut(&key)
            .and_then(|p| p.single.initial_offer.take());
        if let Some((sdp, id)) = initial {
            match SdpOffer::from_sdp_string(&sdp) {
                Ok(offer) => self.on_publisher_offer(now, key, offer, id),
                Err(e) => {
                    if let Some(session) = session {
                        self.protocol_violation(now, session, &format!("join request offer refused: {e}"));
                    }
                    return;
                }
            }
        }
        if can_subscribe {
            self.negotiate(key);
        }
    }

    /// The node's configured ICE servers, and the embedded TURN server with a credential of
    /// this participant's own.
    fn ice_servers(&self, participant: &str) -> Vec<lk::IceServer> {
        let mut servers = self.config.ice_servers.clone();
        if let Some(minter) = &self.config.ice_credentials {
            servers.extend(minter.ice_servers(participant));
        }
        servers
    }

    fn join_response(&self, key: ParticipantKey) -> lk::JoinResponse {
        let p = &self.participants[&key];
        let info = self.server_info();
        lk::JoinResponse {
            room: self.room_info(&p.room),
            participant: Some(p.info(&self.tracks)),
            other_participants: self.others_info(key, &p.room),
            server_version: info.version.clone(),
            ice_servers: self.ice_servers(p.sid.as_str()),
            // On a single peer connection there is no subscriber connection to be primary.
            subscriber_primary: p.permission.can_subscribe && !p.single_pc(),
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
            r.members.iter().copied().find(|k| {
                self.participants
                    .get(k)
                    .is_some_and(|p| p.sid == params.sid && p.identity == params.identity)
            })
        });
        let Some(key) = key else {
            info!(room = %params.room, sid = %params.sid, "resume of unknown participant: asking for a full reconnect");
            let leave = leave_msg(
                lk::DisconnectReason::StateMismatch,
                lk::leave_request::Action::Reconnect,
            );
            self.send(Some(params.session), leave);
            self.outputs.push_back(Output::Close(params.session));
            return;
        };
        let p = self.participants.get_mut(&key).expect("found above");
        if let Some(old) = p.session.replace(params.session) {
            self.sessions.remove(&old);
            self.outputs.push_back(Output::Close(old));
        }
        p.session_lost_at = None;
        if !p.peers().any(|(_, c)| c.failed) {
            self.detached.remove(&key);
        }
        let p = &self.participants[&key];
        let last_seq = p.last_reliable_seq;
        let room = p.room.clone();
        info!(room = %room, participant = %p.sid, "participant resumed");
        self.sessions.insert(params.session, key);
        let reconnect = lk::ReconnectResponse {
            ice_servers: self.ice_servers(p.sid.as_str()),
            client_configuration: None,
            server_info: Some(self.server_info()),
            last_message_seq: last_seq,
        };
        self.send(Some(params.session), Resp::Reconnect(reconnect));
        let mut everyone = self.others_info(key, &room);
        everyone.extend(self.info_of(key));
        self.send(Some(params.session), update(everyone));
        if let Some(info) = self.room_info(&room) {
            self.send(
                Some(params.session),
                Resp::RoomUpdate(lk::RoomUpdate { room: Some(info) }),
            );
        }
        let p = self.participants.get_mut(&key).expect("found above");
        // Single PC: the client restarts ICE with an offer of its own; the server answers.
        if p.permission.can_subscribe && !p.single_pc() {
            p.negotiation.give_up_offer(&mut p.downtracks);
            p.negotiation.ice_restart = true;
            self.negotiate(key);
        }
        self.drain_dirty(now);
    }

    /// One command from a session.
    pub fn signal(&mut self, now: Instant, session: SessionId, cmd: SignalCommand) {
        let Some(key) = self.sessions.get(&session).copied() else {
            debug!(%session, "request from a session without participant; ignored");
            return;
        };
        match cmd {
            SignalCommand::Offer { offer, id } => self.on_publisher_offer(now, key, offer, id),
            SignalCommand::Answer { answer, id } => self.on_subscriber_answer(now, key, answer, id),
            SignalCommand::Trickle { target, candidate } => self.on_trickle(key, target, candidate),
            SignalCommand::AddTrack(t) => self.on_add_track(now, key, *t),
            SignalCommand::Mute { track, muted } => self.on_mute(key, &track, muted),
            SignalCommand::Subscription { tracks, subscribe } => {
                self.on_update_subscription(now, key, &tracks, subscribe)
            }
            SignalCommand::TrackSettings(settings) => self.on_track_settings(now, key, settings),
            SignalCommand::Leave => {
                self.remove_participant(now, key, lk::DisconnectReason::ClientInitiated, None)
            }
            SignalCommand::SubscriptionPermission(perm) => self.on_subscription_permission(now, key, perm),
            SignalCommand::UpdateMetadata(m) => self.on_update_metadata(key, m),
            SignalCommand::Ping => {
                let ms = self.unix_ms(now);
                self.send_to(key, Resp::Pong(ms));
            }
            SignalCommand::PingReq { timestamp } => {
                let pong = lk::Pong {
                    last_ping_timestamp: timestamp,
                    timestamp: self.unix_ms(now),
                };
                self.send_to(key, Resp::PongResp(pong));
            }
            SignalCommand::PublishDataTrack(req) => self.on_publish_data_track(key, req),
            SignalCommand::UnpublishDataTrack { handle } => self.on_unpublish_data_track(key, handle),
            SignalCommand::DataSubscription(updates) => self.on_data_subscription(key, updates),
            SignalCommand::Ignored => {}
        }
        self.drain_dirty(now);
    }

    fn on_publisher_offer(&mut self, now: Instant, key: ParticipantKey, offer: SdpOffer, id: u32) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        if p.single_pc() {
            return self.on_single_pc_offer(now, key, offer, id);
        }
        let Some(session) = p.session else { return };
        let offer_text = offer.to_sdp_string();
        let answer = match p.publisher.rtc.sdp_api().accept_offer(offer) {
            Ok(a) => a,
            Err(e) => return self.protocol_violation(now, session, &format!("offer refused: {e}")),
        };
        let answer = lk::SessionDescription {
            r#type: "answer".into(),
            sdp: self.announced_codecs_first(key, &offer_text, &answer.to_sdp_string()),
            id,
            mid_to_track_id: Default::default(),
        };
        self.send(Some(session), Resp::Answer(answer));
        let peer = PeerRef {
            key,
            pc: PcKind::Publisher,
        };
        self.remember_ufrag(peer);
        self.drain(now, peer);
    }

    fn on_subscriber_answer(&mut self, now: Instant, key: ParticipantKey, answer: SdpAnswer, id: u32) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let Some(subscriber) = p.subscriber.as_mut() else {
            debug!(participant = %p.sid, "answer on a single peer connection; ignored");
            return;
        };
        let again = match p.negotiation.answer(&mut subscriber.rtc, id, answer) {
            AnswerOutcome::Ignored => {
                debug!(participant = %p.sid, id, "answer without a matching pending offer; ignored");
                return;
            }
            AnswerOutcome::Settled { refused, again } => {
                debug!(participant = %p.sid, id, again, "subscriber answer");
                if let Some(why) = refused {
                    warn!(participant = %p.sid, "subscriber answer refused: {why}");
                }
                again
            }
        };
        self.dirty.push(PeerRef {
            key,
            pc: PcKind::Subscriber,
        });
        self.start_new_downtracks(now, key);
        if again {
            self.negotiate(key);
        }
    }

    fn on_trickle(&mut self, key: ParticipantKey, target: PcKind, candidate: Candidate) {
        if let Some(p) = self.participants.get_mut(&key) {
            p.peer_mut(target).rtc.add_remote_candidate(candidate);
        }
    }

    /// Refuse an AddTrack with a `RequestResponse` naming it, as LiveKit does.
    fn refuse_add_track(
        &mut self,
        session: Option<SessionId>,
        req: &AddTrack,
        reason: lk::request_response::Reason,
        message: String,
    ) {
        let rr = lk::RequestResponse {
            request_id: 0,
            reason: reason as i32,
            message,
            request: Some(lk::request_response::Request::AddTrack(req.to_wire())),
        };
        self.send(session, Resp::RequestResponse(rr));
    }

    fn on_add_track(&mut self, now: Instant, key: ParticipantKey, req: AddTrack) {
        let sid = TrackSid::generate(&mut self.rng);
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        use lk::request_response::Reason;
        if !p.may_publish(req.source) {
            info!(participant = %p.sid, source = ?req.source, "add track refused: not allowed");
            let session = p.session;
            return self.refuse_add_track(
                session,
                &req,
                Reason::NotAllowed,
                "does not have permission to publish".into(),
            );
        }
        // The same cid again (a client retrying) is the same track: answer as before.
        if let Some(pending) = p.pending_tracks.iter().find(|t| t.cid == req.cid) {
            debug!(participant = %p.sid, cid = %req.cid, "AddTrack repeated; answered with the pending track");
            let published = lk::TrackPublishedResponse {
                cid: req.cid,
                track: Some(pending.info.clone()),
            };
            let session = p.session;
            return self.send(session, Resp::TrackPublished(published));
        }
        if p.pending_tracks.len() >= limits::MAX_PENDING_TRACKS
            || p.tracks.len() >= limits::MAX_PUBLISHED_TRACKS
        {
            if !std::mem::replace(&mut p.warned_tracks, true) {
                warn!(participant = %p.sid, pending = p.pending_tracks.len(), published = p.tracks.len(), "add track refused: too many tracks");
            }
            let why = format!(
                "at most {} tracks pending and {} published",
                limits::MAX_PENDING_TRACKS,
                limits::MAX_PUBLISHED_TRACKS
            );
            let session = p.session;
            return self.refuse_add_track(session, &req, Reason::LimitExceeded, why);
        }
        let info = req.track_info(&sid);
        debug!(participant = %p.sid, cid = %req.cid, track = %sid, "track pending");
        p.pending_tracks.push(PendingTrack {
            cid: req.cid.clone(),
            info: info.clone(),
        });
        let session = p.session;
        let published = lk::TrackPublishedResponse {
            cid: req.cid,
            track: Some(info),
        };
        self.send(session, Resp::TrackPublished(published));
        self.match_unmatched_media(now, key);
    }

    fn on_mute(&mut self, key: ParticipantKey, track: &TrackSid, muted: bool) {
        let Some(&tkey) = self.track_sids.get(track) else {
            debug!(participant = ?key, %track, "mute of unknown track; ignored");
            return;
        };
        let Some(t) = self.tracks.get_mut(&tkey).filter(|t| t.owner == key) else {
            debug!(participant = ?key, %track, "mute of another participant's track; ignored");
            return;
        };
        if t.info.muted == muted {
            return;
        }
        t.info.muted = muted;
        if let Some(p) = self.participants.get_mut(&key) {
            p.bump_version();
        }
        self.announce(key);
    }

    fn on_track_settings(&mut self, now: Instant, key: ParticipantKey, settings: TrackSettings) {
        let TrackSettings {
            tracks,
            disabled,
            quality,
            priority,
            fps,
        } = settings;
        let mut changed = Vec::new();
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        for sid in &tracks {
            let Some(t) = self.track_sids.get(sid).and_then(|k| self.tracks.get(k)) else {
                continue;
            };
            let Some(dt) = p.downtracks.get_mut(&t.key) else {
                continue;
            };
            let max_layer = match quality {
                QualityRequest::Layer(l) => l.min(TOP_LAYER),
                QualityRequest::Size { width, height } => layer_for_size(&t.info, width, height),
            };
            // Read by the next allocation (`downlink.rs`) and the next packet (`forward.rs`);
            // nothing to converge on now.
            dt.priority = priority;
            dt.set_fps(fps, &t.rates);
            let wakes = dt.disabled && !disabled;
            if dt.disabled != disabled || (t.kind.is_video() && dt.max_layer != max_layer) {
                dt.disabled = disabled;
                dt.max_layer = max_layer;
                if disabled {
                    dt.forwarder.set_target(None);
                } else if t.kind.is_video() {
                    // Converge on the new layer at its next keyframe; until then the current
                    // one keeps flowing.
                    dt.forwarder
                        .set_target(dt.target_for(t.best_layer(now)).or(Some(0)));
                } else if wakes {
                    dt.forwarder.set_target(Some(0));
                }
                debug!(subscriber = %p.sid, track = %t.sid, disabled, max_layer, "track settings");
                changed.push(t.key);
            }
        }
        for tkey in changed {
            self.update_wish(tkey);
            if !disabled {
                self.request_keyframe(now, tkey);
            }
        }
    }

    fn on_subscription_permission(
        &mut self,
        now: Instant,
        key: ParticipantKey,
        perm: SubscriptionPermission,
    ) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        p.subscribe_allow = Some(perm);
        self.enforce_subscription_permission(now, key);
        self.relay_participant(key);
    }

    fn on_update_metadata(&mut self, key: ParticipantKey, m: MetadataUpdate) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let within_limits = crate::limits::check_metadata(m.metadata.as_deref().unwrap_or(""))
            .and_then(|_| crate::limits::check_name(m.name.as_deref().unwrap_or("")))
            .and_then(|_| crate::limits::check_attributes(&p.attributes, &m.attributes));
        let ok = p.permission.can_update_metadata && within_limits.is_ok();
        if ok {
            if let Some(md) = &m.metadata {
                p.metadata = md.clone();
            }
            if let Some(name) = &m.name {
                p.name = name.clone();
            }
            crate::limits::apply_attributes(&mut p.attributes, &m.attributes);
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
            self.announce(key);
        }
        if wants_ack {
            let rr = lk::RequestResponse {
                request_id: m.request_id,
                reason: reason as i32,
                message,
                request: Some(lk::request_response::Request::UpdateMetadata(m.to_wire())),
            };
            self.send(session, Resp::RequestResponse(rr));
        }
    }
}

impl AddTrack {
    /// The TrackInfo clients will see for this track, under the sid we minted.
    pub fn track_info(&self, sid: &TrackSid) -> lk::TrackInfo {
        let is_video = self.kind.is_video();
        let mime = mime_for(is_video, self.codec.as_deref());
        let layers: Vec<lk::VideoLayer> = self.layers.iter().map(|l| l.to_wire()).collect();
        let codecs = vec![lk::SimulcastCodecInfo {
            mime_type: mime.clone(),
            cid: self.cid.clone(),
            layers: layers.clone(),
            ..Default::default()
        }];
        lk::TrackInfo {
            sid: sid.as_str().to_string(),
            r#type: if is_video {
                lk::TrackType::Video
            } else {
                lk::TrackType::Audio
            } as i32,
            name: self.name.clone(),
            muted: self.muted,
            width: self.width,
            height: self.height,
            simulcast: self.layers.len() > 1,
            disable_dtx: self.disable_dtx,
            source: self.source as i32,
            layers,
            mime_type: mime,
            codecs,
            stereo: self.stereo,
            disable_red: self.disable_red,
            encryption: self.encryption,
            stream: self.stream.clone(),
            audio_features: self.audio_features.clone(),
            backup_codec_policy: self.backup_codec_policy,
            ..Default::default()
        }
    }

    /// The request as LiveKit echoes it back in `RequestResponse`.
    pub fn to_wire(&self) -> lk::AddTrackRequest {
        lk::AddTrackRequest {
            cid: self.cid.clone(),
            name: self.name.clone(),
            r#type: if self.kind.is_video() {
                lk::TrackType::Video
            } else {
                lk::TrackType::Audio
            } as i32,
            width: self.width,
            height: self.height,
            muted: self.muted,
            disable_dtx: self.disable_dtx,
            source: self.source as i32,
            layers: self.layers.iter().map(|l| l.to_wire()).collect(),
            stereo: self.stereo,
            disable_red: self.disable_red,
            encryption: self.encryption,
            stream: self.stream.clone(),
            backup_codec_policy: self.backup_codec_policy,
            audio_features: self.audio_features.clone(),
            ..Default::default()
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
