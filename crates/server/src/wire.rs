//! The signalling edge's parser: a LiveKit `SignalRequest` (decoded from protobuf or JSON)
//! becomes the core's [`SignalCommand`] here, once. SDP, sids and ICE candidates are parsed;
//! what cannot be parsed is either a protocol violation (the participant is disconnected) or
//! ignored, exactly as before the core had its own types.

// LiveKit marks fields deprecated that today's SDKs still send; we must read them.
#![allow(deprecated)]

use livekit_protocol as lk;
use lk::signal_request::Message as Req;
use pylon_core::command::{
    AddTrack, MetadataUpdate, PublishDataTrack, QualityRequest, SignalCommand, SubscriptionPermission,
    TrackPermission, TrackSettings, VideoLayer,
};
use pylon_core::ids::{DataTrackSid, ParticipantIdentity, ParticipantSid, TrackSid};
use pylon_core::peer::PcKind;
use serde::Deserialize;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::MediaKind;
use str0m::Candidate;
use tracing::debug;

/// Why a request disconnects its sender (LiveKit `STATE_MISMATCH`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("empty signal request")]
    Empty,
    #[error("unparseable offer: {0}")]
    Offer(String),
    #[error("unparseable answer: {0}")]
    Answer(String),
}

#[derive(Deserialize)]
struct CandidateInit {
    #[serde(default)]
    candidate: String,
}

/// The core command for one request.
pub fn signal_command(req: lk::SignalRequest) -> Result<SignalCommand, WireError> {
    let msg = req.message.ok_or(WireError::Empty)?;
    Ok(match msg {
        Req::Offer(sd) => {
            pylon_core::limits::check_offer_sections(&sd.sdp).map_err(WireError::Offer)?;
            let offer = SdpOffer::from_sdp_string(&sd.sdp).map_err(|e| WireError::Offer(e.to_string()))?;
            SignalCommand::Offer { offer, id: sd.id }
        }
        Req::Answer(sd) => {
            let answer = SdpAnswer::from_sdp_string(&sd.sdp).map_err(|e| WireError::Answer(e.to_string()))?;
            SignalCommand::Answer { answer, id: sd.id }
        }
        Req::Trickle(t) => trickle(t),
        Req::AddTrack(t) => SignalCommand::AddTrack(Box::new(add_track(t))),
        Req::Mute(m) => match TrackSid::parse(&m.sid) {
            Some(track) => SignalCommand::Mute {
                track,
                muted: m.muted,
            },
            None => ignored("mute of an invalid track sid"),
        },
        Req::Subscription(s) => {
            let sids = s
                .track_sids
                .iter()
                .chain(s.participant_tracks.iter().flat_map(|pt| pt.track_sids.iter()));
            SignalCommand::Subscription {
                tracks: track_sids(sids),
                subscribe: s.subscribe,
            }
        }
        Req::TrackSetting(s) => track_settings(s),
        Req::Leave(_) => SignalCommand::Leave,
        Req::SubscriptionPermission(p) => SignalCommand::SubscriptionPermission(subscription_permission(p)),
        Req::UpdateMetadata(m) => SignalCommand::UpdateMetadata(MetadataUpdate {
            request_id: m.request_id,
            metadata: non_empty(m.metadata),
            name: non_empty(m.name),
            attributes: m.attributes,
        }),
        Req::PublishDataTrackRequest(r) => SignalCommand::PublishDataTrack(PublishDataTrack {
            handle: r.pub_handle,
            name: r.name,
            encryption: r.encryption,
            frame_encoding: r.frame_encoding,
            schema: r.schema,
        }),
        Req::UnpublishDataTrackRequest(r) => SignalCommand::UnpublishDataTrack { handle: r.pub_handle },
        Req::UpdateDataSubscription(s) => SignalCommand::DataSubscription(
            s.updates
                .into_iter()
                .take(pylon_core::limits::MAX_DATA_SUBSCRIPTION_UPDATES)
                .map(|u| (u.track_sid, u.subscribe))
                .collect(),
        ),
        Req::Ping(_) => SignalCommand::Ping,
        Req::PingReq(p) => SignalCommand::PingReq {
            timestamp: p.timestamp,
        },
        Req::SyncState(_) | Req::Simulate(_) | Req::UpdateLayers(_) => SignalCommand::Ignored,
        Req::UpdateAudioTrack(_) | Req::UpdateVideoTrack(_) => SignalCommand::Ignored,
        other => {
            debug!("unsupported signal request {:?}", std::mem::discriminant(&other));
            SignalCommand::Ignored
        }
    })
}

/// `UpdateTrackSettings` as LiveKit reads it: a size, when one is given, takes precedence
/// over the (deprecated but still sent) quality; `OFF` pauses like `disabled`; an unknown
/// quality asks for everything.
fn track_settings(s: lk::UpdateTrackSettings) -> SignalCommand {
    let off = s.quality == lk::VideoQuality::Off as i32;
    let quality = if s.width > 0 || s.height > 0 {
        QualityRequest::Size {
            width: s.width,
            height: s.height,
        }
    } else {
        match lk::VideoQuality::try_from(s.quality) {
            Ok(q @ (lk::VideoQuality::Low | lk::VideoQuality::Medium | lk::VideoQuality::High)) => {
                QualityRequest::Layer(q as u8)
            }
            _ => QualityRequest::Layer(2),
        }
    };
    SignalCommand::TrackSettings(TrackSettings {
        tracks: track_sids(s.track_sids.iter()),
        disabled: s.disabled || off,
        quality,
        priority: std::num::NonZeroU32::new(s.priority),
        fps: s.fps,
    })
}

fn ignored(why: &str) -> SignalCommand {
    debug!("signal request ignored: {why}");
    SignalCommand::Ignored
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Valid track sids; invalid ones name no track and are dropped.
fn track_sids<'a>(sids: impl Iterator<Item = &'a String>) -> Vec<TrackSid> {
    sids.filter_map(|s| TrackSid::parse(s)).collect()
}

fn trickle(t: lk::TrickleRequest) -> SignalCommand {
    let Ok(init) = serde_json::from_str::<CandidateInit>(&t.candidate_init) else {
        return ignored("trickle with malformed candidate JSON");
    };
    if init.candidate.is_empty() {
        return SignalCommand::Ignored;
    }
    let target = if t.target == lk::SignalTarget::Subscriber as i32 {
        PcKind::Subscriber
    } else {
        PcKind::Publisher
    };
    match Candidate::from_sdp_string(&init.candidate) {
        Ok(candidate) => SignalCommand::Trickle { target, candidate },
        Err(_) => ignored("unusable remote candidate"),
    }
}

fn add_track(t: lk::AddTrackRequest) -> AddTrack {
    let kind = if t.r#type == lk::TrackType::Video as i32 {
        MediaKind::Video
    } else {
        MediaKind::Audio
    };
    AddTrack {
        cid: t.cid,
        kind,
        name: t.name,
        source: lk::TrackSource::try_from(t.source).unwrap_or(lk::TrackSource::Unknown),
        muted: t.muted,
        width: t.width,
        height: t.height,
        layers: t
            .layers
            .iter()
            .map(|l| VideoLayer {
                quality: lk::VideoQuality::try_from(l.quality).unwrap_or(lk::VideoQuality::Low),
                width: l.width,
                height: l.height,
                bitrate: l.bitrate,
                rid: l.rid.clone(),
            })
            .collect(),
        codec: t.simulcast_codecs.first().map(|c| c.codec.clone()),
        disable_dtx: t.disable_dtx,
        stereo: t.stereo,
        disable_red: t.disable_red,
        encryption: t.encryption,
        stream: t.stream,
        audio_features: t.audio_features,
        backup_codec_policy: t.backup_codec_policy,
    }
}

fn subscription_permission(p: lk::SubscriptionPermission) -> SubscriptionPermission {
    SubscriptionPermission {
        all_participants: p.all_participants,
        grants: p
            .track_permissions
            .into_iter()
            .map(|tp| TrackPermission {
                participant_sid: ParticipantSid::parse(&tp.participant_sid),
                participant_identity: non_empty(tp.participant_identity).map(ParticipantIdentity::new),
                all_tracks: tp.all_tracks,
                tracks: track_sids(tp.track_sids.iter()),
                data_tracks: tp
                    .track_sids
                    .iter()
                    .filter_map(|s| DataTrackSid::parse(s))
                    .collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(m: Req) -> lk::SignalRequest {
        lk::SignalRequest { message: Some(m) }
    }

    #[test]
    fn an_empty_request_or_bad_sdp_is_a_violation() {
        assert_eq!(
            signal_command(lk::SignalRequest::default()).unwrap_err(),
            WireError::Empty
        );
        let bad = lk::SessionDescription {
            r#type: "offer".into(),
            sdp: "v=garbage".into(),
            ..Default::default()
        };
        assert!(matches!(
            signal_command(req(Req::Offer(bad))),
            Err(WireError::Offer(_))
        ));
        let huge = lk::SessionDescription {
            r#type: "offer".into(),
            sdp: "v=0\r\n".to_string() + &"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\n".repeat(1025),
            ..Default::default()
        };
        assert_eq!(
            signal_command(req(Req::Offer(huge))).unwrap_err(),
            WireError::Offer("1025 media sections, more than 1024".into())
        );
    }

    #[test]
    fn track_settings_read_a_size_before_the_quality_and_off_pauses() {
        let settings = |quality: lk::VideoQuality, width, height, disabled| {
            let s = lk::UpdateTrackSettings {
                track_sids: vec!["TR_a".into()],
                quality: quality as i32,
                width,
                height,
                disabled,
                ..Default::default()
            };
            match signal_command(req(Req::TrackSetting(s))).unwrap() {
                SignalCommand::TrackSettings(s) => (s.disabled, s.quality),
                other => panic!("{other:?}"),
            }
        };
        use lk::VideoQuality::*;
        assert_eq!(settings(Low, 0, 0, false), (false, QualityRequest::Layer(0)));
        assert_eq!(settings(Medium, 0, 0, false), (false, QualityRequest::Layer(1)));
        assert_eq!(
            settings(Low, 320, 180, false),
            (
                false,
                QualityRequest::Size {
                    width: 320,
                    height: 180
                }
            )
        );
        assert!(settings(Off, 0, 0, false).0, "OFF pauses");
        // A priority is carried (1 highest); 0 means none.
        let priority = |priority| {
            let s = lk::UpdateTrackSettings {
                priority,
                ..Default::default()
            };
            match signal_command(req(Req::TrackSetting(s))).unwrap() {
                SignalCommand::TrackSettings(s) => s.priority.map(|p| p.get()),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(priority(0), None);
        assert_eq!(priority(2), Some(2));
        // A frame rate is carried as given (0: none).
        let s = lk::UpdateTrackSettings {
            fps: 15,
            ..Default::default()
        };
        assert!(matches!(
            signal_command(req(Req::TrackSetting(s))).unwrap(),
            SignalCommand::TrackSettings(TrackSettings { fps: 15, .. })
        ));
        assert!(settings(High, 0, 0, true).0);
        // A quality this build does not know asks for everything.
        let s = lk::UpdateTrackSettings {
            quality: 99,
            ..Default::default()
        };
        assert!(matches!(
            signal_command(req(Req::TrackSetting(s))).unwrap(),
            SignalCommand::TrackSettings(TrackSettings {
                quality: QualityRequest::Layer(2),
                ..
            })
        ));
    }

    #[test]
    fn invalid_sids_and_candidates_are_dropped_not_fatal() {
        let sub = lk::UpdateSubscription {
            track_sids: vec!["TR_ok".into(), "nonsense".into()],
            subscribe: true,
            ..Default::default()
        };
        let SignalCommand::Subscription { tracks, .. } = signal_command(req(Req::Subscription(sub))).unwrap()
        else {
            panic!("subscription expected")
        };
        assert_eq!(tracks, vec![TrackSid::new("TR_ok")]);
        let trickle = lk::TrickleRequest {
            candidate_init: "{not json".into(),
            ..Default::default()
        };
        assert!(matches!(
            signal_command(req(Req::Trickle(trickle))).unwrap(),
            SignalCommand::Ignored
        ));
    }

    #[test]
    fn empty_metadata_fields_mean_unchanged() {
        let m = lk::UpdateParticipantMetadata {
            metadata: String::new(),
            name: "n".into(),
            ..Default::default()
        };
        let SignalCommand::UpdateMetadata(u) = signal_command(req(Req::UpdateMetadata(m))).unwrap() else {
            panic!("metadata update expected")
        };
        assert_eq!((u.metadata, u.name.as_deref()), (None, Some("n")));
    }
}
