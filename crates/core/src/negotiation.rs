//! The subscriber connection's offer/answer cycle: the server offers, the client answers.
//!
//! Changes (tracks to add, sections to deactivate or reactivate, an ICE restart) queue up; an
//! offer carries all of them, at most one offer is outstanding, and changes made meanwhile go
//! into the next offer once the answer arrives (livekit-protocol.md §7).

use std::collections::HashMap;

use livekit_protocol as lk;
use rustc_hash::FxHashMap;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, Reliability};
use str0m::media::{Direction, Mid};
use str0m::Rtc;

use crate::data::{DATA_TRACK_LABEL, LOSSY_LABEL, RELIABLE_LABEL};
use crate::ids::{TrackKey, TrackSid};
use crate::track::{DownTrack, ParkedDownTrack};

/// Server-side offer/answer state of the subscriber peer connection.
#[derive(Default)]
pub struct SubscriberNegotiation {
    pub pending: Option<(u32, SdpPendingOffer)>,
    /// Changes were queued while an offer was outstanding.
    pub again: bool,
    pub last_offer_id: u32,
    pub adds: Vec<TrackKey>,
    pub removes: Vec<Mid>,
    /// Parked media sections to turn back to sendonly in the next offer.
    pub reactivate: Vec<Mid>,
    /// Media sections of unsubscribed or vanished tracks, by track SID, kept inactive with
    /// their forwarding state: subscribing to a track of that SID again — a resubscription, or
    /// a track relayed from another region that went silent and came back under a new key —
    /// reuses the section (a new one would repeat the track's msid, which libwebrtc refuses as
    /// a duplicate `a=msid`) and continues its sequence numbers.
    pub parked: HashMap<TrackSid, ParkedDownTrack>,
    pub channels_created: bool,
    pub ice_restart: bool,
}

/// What became of a client's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum AnswerOutcome {
    /// The outstanding offer is settled: applied, or refused by str0m (`refused` says why;
    /// the caller logs it). `again` says changes queued meanwhile need a new offer.
    Settled { refused: Option<String>, again: bool },
    /// No offer outstanding, or the answer is for an older one.
    Ignored,
}

impl SubscriberNegotiation {
    /// Make an offer carrying every queued change, unless one is outstanding (then the
    /// changes wait for the answer). `None` when there is nothing to offer.
    pub fn offer(
        &mut self,
        rtc: &mut Rtc,
        downtracks: &mut FxHashMap<TrackKey, DownTrack>,
    ) -> Option<lk::SessionDescription> {
        if self.pending.is_some() {
            self.again = true;
            return None;
        }
        let mut api = rtc.sdp_api();
        if !self.channels_created {
            self.channels_created = true;
            api.add_channel_with_config(ChannelConfig {
                label: RELIABLE_LABEL.into(),
                ordered: true,
                reliability: Reliability::Reliable,
                ..Default::default()
            });
            api.add_channel_with_config(ChannelConfig {
                label: LOSSY_LABEL.into(),
                ordered: false,
                reliability: Reliability::MaxRetransmits { retransmits: 0 },
                ..Default::default()
            });
            api.add_channel_with_config(ChannelConfig {
                label: DATA_TRACK_LABEL.into(),
                ordered: false,
                reliability: Reliability::MaxRetransmits { retransmits: 0 },
                ..Default::default()
            });
        }
        if std::mem::take(&mut self.ice_restart) {
            // New local credentials: an offer with unchanged ufrag/pwd is not a restart to
            // the answerer (RFC 8445 §9), and libwebrtc would keep its old, dead state.
            api.ice_restart(false);
        }
        for tkey in self.adds.drain(..) {
            let Some(dt) = downtracks.get_mut(&tkey) else {
                continue;
            };
            if dt.mid.is_some() {
                continue;
            }
            let stream = format!("{}|{}", dt.publisher_sid, dt.track_sid);
            let track = dt.track_sid.as_str().to_string();
            dt.mid = Some(api.add_media(dt.kind, Direction::SendOnly, Some(stream), Some(track), None));
        }
        for mid in self.removes.drain(..) {
            api.set_direction(mid, Direction::Inactive);
        }
        for mid in self.reactivate.drain(..) {
            api.set_direction(mid, Direction::SendOnly);
        }
        let (offer, pending) = api.apply()?;
        self.last_offer_id += 1;
        let id = self.last_offer_id;
        self.pending = Some((id, pending));
        let mid_to_track_id: HashMap<String, String> = downtracks
            .values()
            .filter_map(|d| d.mid.map(|m| (m.to_string(), d.track_sid.as_str().to_string())))
            .collect();
        Some(lk::SessionDescription {
            r#type: "offer".into(),
            sdp: offer.to_sdp_string(),
            id,
            mid_to_track_id,
        })
    }

    /// Apply the client's answer to offer `id` (0: the outstanding one).
    pub fn answer(&mut self, rtc: &mut Rtc, id: u32, answer: SdpAnswer) -> AnswerOutcome {
        let Some((pending_id, pending)) = self.pending.take() else {
            return AnswerOutcome::Ignored;
        };
        if id != 0 && id != pending_id {
            self.pending = Some((pending_id, pending));
            return AnswerOutcome::Ignored;
        }
        let refused = rtc.sdp_api().accept_answer(pending, answer).err();
        AnswerOutcome::Settled {
            refused: refused.map(|e| e.to_string()),
            again: std::mem::take(&mut self.again),
        }
    }
}
