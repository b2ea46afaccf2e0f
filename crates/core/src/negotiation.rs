//! The subscriber connection's offer/answer cycle: the server offers, the client answers.
//!
//! Changes (tracks to add, sections to deactivate or reactivate, an ICE restart) queue up; an
//! offer carries all of them, at most one offer is outstanding, and changes made meanwhile go
//! into the next offer once the answer arrives (livekit-protocol.md §7).
//!
//! Sections are recycled, as LiveKit reuses transceivers: an unsubscribed track's section is
//! parked inactive; once the client has answered that, it is *dormant*, and the next
//! subscription to any track of the same kind takes it over with a new msid (`msid.rs`). So a
//! subscriber's SDP holds as many media sections as it ever had subscriptions at once, however
//! many tracks come and go (`docs/mline-recycling.md`).
//!
//! A section never carries the same track twice once the client has seen it go: the Rust SDK
//! (and so the Python one) dispatches a remote track once per (mid, msid stream id) for the
//! life of the connection, so a track subscribed again, or relayed back after a partition,
//! takes another section, and its old one stops announcing it (two sections with one msid are
//! refused by libwebrtc).

use std::collections::{HashMap, VecDeque};

use livekit_protocol as lk;
use rustc_hash::FxHashMap;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, Reliability};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::Rtc;

use crate::data::{DATA_TRACK_LABEL, LOSSY_LABEL, RELIABLE_LABEL};
use crate::ids::{TrackKey, TrackSid};
use crate::msid::{self, Msid};
use crate::track::{DownTrack, ParkedDownTrack};

/// Server-side offer/answer state of the subscriber peer connection.
#[derive(Default)]
pub struct SubscriberNegotiation {
    pub pending: Option<Sent>,
    /// Changes were queued while an offer was outstanding.
    pub again: bool,
    pub last_offer_id: u32,
    pub adds: Vec<TrackKey>,
    pub removes: Vec<Mid>,
    /// Parked media sections to turn back to sendonly in the next offer.
    pub reactivate: Vec<Mid>,
    /// Media sections of unsubscribed or vanished tracks, by mid, kept inactive with their
    /// forwarding state until a track takes one over (its own again only while the client has
    /// not been offered its removal).
    pub parked: HashMap<Mid, ParkedDownTrack>,
    /// Which track each section carried, newest last (bounded: `CARRIED_KEPT`): a section is
    /// not given to a track it carried before.
    pub carried: VecDeque<(Mid, TrackSid)>,
    /// The msid each recycled section announces now (str0m keeps the one it was added with).
    pub msids: HashMap<Mid, Msid>,
    pub channels_created: bool,
    pub ice_restart: bool,
}

/// Section/track pairs remembered (`SubscriberNegotiation::carried`); beyond this the oldest
/// are forgotten, which can only cost a returning track the SDK's `track_subscribed`.
pub const CARRIED_KEPT: usize = 1024;

/// The outstanding offer and the changes it carries: str0m applies them only when the answer
/// comes, so an offer that is given up (a resume's ICE restart) must queue them again.
pub struct Sent {
    pub id: u32,
    offer: SdpPendingOffer,
    /// It adds the data channels (the first offer).
    channels: bool,
    adds: Vec<(TrackKey, Mid)>,
    removes: Vec<Mid>,
    reactivate: Vec<Mid>,
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
        let channels = !self.channels_created;
        if channels {
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
        let mut adds = Vec::with_capacity(self.adds.len());
        for tkey in self.adds.drain(..) {
            let Some(dt) = downtracks.get_mut(&tkey) else {
                continue;
            };
            if dt.mid.is_some() {
                continue;
            }
            let msid = Msid::of(&dt.publisher_sid, &dt.track_sid);
            let mid = api.add_media(
                dt.kind,
                Direction::SendOnly,
                Some(msid.stream),
                Some(msid.track),
                None,
            );
            dt.mid = Some(mid);
            adds.push((tkey, mid));
        }
        for (tkey, mid) in &adds {
            if let Some(dt) = downtracks.get(tkey) {
                self.note_carried(*mid, &dt.track_sid);
            }
        }
        for &mid in &self.removes {
            api.set_direction(mid, Direction::Inactive);
        }
        for &mid in &self.reactivate {
            api.set_direction(mid, Direction::SendOnly);
        }
        let removes = std::mem::take(&mut self.removes);
        let reactivate = std::mem::take(&mut self.reactivate);
        let Some((offer, pending)) = api.apply() else {
            // Nothing changed in str0m's view (e.g. a section parked and taken back before
            // any offer): nothing to offer.
            return None;
        };
        self.last_offer_id += 1;
        let id = self.last_offer_id;
        self.pending = Some(Sent {
            id,
            offer: pending,
            channels,
            adds,
            removes,
            reactivate,
        });
        let mid_to_track_id: HashMap<String, String> = downtracks
            .values()
            .filter_map(|d| d.mid.map(|m| (m.to_string(), d.track_sid.as_str().to_string())))
            .collect();
        Some(lk::SessionDescription {
            r#type: "offer".into(),
            sdp: msid::rewrite(&offer.to_sdp_string(), &self.msids),
            id,
            mid_to_track_id,
        })
    }

    /// Give up the outstanding offer (the client resumed and will answer a new one) and queue
    /// its changes again, so the next offer carries them.
    pub fn give_up_offer(&mut self, downtracks: &mut FxHashMap<TrackKey, DownTrack>) {
        let Some(sent) = self.pending.take() else {
            return;
        };
        self.channels_created &= !sent.channels;
        for (tkey, mid) in sent.adds {
            match downtracks.get_mut(&tkey) {
                Some(dt) if dt.mid == Some(mid) => {
                    dt.mid = None;
                    self.adds.push(tkey);
                }
                // Unsubscribed since: its section never existed, so there is nothing to park.
                _ => {
                    self.parked.remove(&mid);
                    self.removes.retain(|m| *m != mid);
                    self.reactivate.retain(|m| *m != mid);
                    self.msids.remove(&mid);
                }
            }
        }
        // Queued changes are newer than the ones given up: a section parked by the lost offer
        // and taken back since stays active, and the other way round.
        for mid in sent.removes {
            if !self.reactivate.contains(&mid) && !self.removes.contains(&mid) {
                self.removes.push(mid);
            }
        }
        for mid in sent.reactivate {
            if !self.removes.contains(&mid) && !self.reactivate.contains(&mid) {
                self.reactivate.push(mid);
            }
        }
    }

    /// An unsubscribed track's section goes out of use: queued inactive and parked under the
    /// track's SID (a track not offered yet only leaves the queued additions).
    pub fn park(&mut self, dt: DownTrack) {
        let Some(mid) = dt.mid else {
            self.adds.retain(|k| *k != dt.track);
            return;
        };
        self.removes.push(mid);
        self.reactivate.retain(|m| *m != mid);
        let kept = ParkedDownTrack {
            mid,
            sid: dt.track_sid,
            kind: dt.kind,
            dormant: false,
            forwarder: dt.forwarder,
            vp8: dt.vp8,
            pt_map: dt.pt_map,
        };
        self.parked.insert(mid, kept);
    }

    /// The track's own parked section, if the client has not been offered its removal yet
    /// (it never saw the track go): the section simply stays active.
    pub fn take_back(&mut self, sid: &TrackSid) -> Option<ParkedDownTrack> {
        let mid = self
            .parked
            .values()
            .find(|p| &p.sid == sid && self.removes.contains(&p.mid))
            .map(|p| p.mid)?;
        self.removes.retain(|m| *m != mid);
        self.parked.remove(&mid)
    }

    /// The track `sid` is about to be announced on a section it never had: every parked
    /// section that still announces it stops doing so (an inert msid; libwebrtc refuses two
    /// sections with one msid).
    pub fn retire_msid(&mut self, sid: &TrackSid) {
        for p in self.parked.values().filter(|p| &p.sid == sid) {
            self.msids.insert(p.mid, Msid::inert(p.mid));
        }
    }

    fn note_carried(&mut self, mid: Mid, sid: &TrackSid) {
        if self.carried.len() == CARRIED_KEPT {
            self.carried.pop_front();
        }
        self.carried.push_back((mid, sid.clone()));
    }

    fn has_carried(&self, mid: Mid, sid: &TrackSid) -> bool {
        self.carried.iter().any(|(m, s)| *m == mid && s == sid)
    }

    /// Take a dormant section of `kind` (its track unsubscribed or gone, the client's answer
    /// to that received) for another track: the section is reactivated and announces `msid`.
    pub fn recycle(&mut self, kind: MediaKind, sid: &TrackSid, msid: Msid) -> Option<ParkedDownTrack> {
        let mid = self
            .parked
            .values()
            .filter(|p| p.dormant && p.kind == kind && !self.has_carried(p.mid, sid))
            .map(|p| p.mid)
            .min()?;
        let parked = self.parked.remove(&mid)?;
        self.msids.insert(parked.mid, msid);
        self.reactivate.push(parked.mid);
        self.note_carried(parked.mid, sid);
        Some(parked)
    }

    /// Apply the client's answer to offer `id` (0: the outstanding one).
    pub fn answer(&mut self, rtc: &mut Rtc, id: u32, answer: SdpAnswer) -> AnswerOutcome {
        let Some(sent) = self.pending.take() else {
            return AnswerOutcome::Ignored;
        };
        if id != 0 && id != sent.id {
            self.pending = Some(sent);
            return AnswerOutcome::Ignored;
        }
        let refused = rtc.sdp_api().accept_answer(sent.offer, answer).err();
        if refused.is_none() {
            // The client has these sections inactive now: free for other tracks.
            for p in self.parked.values_mut() {
                if sent.removes.contains(&p.mid) {
                    p.dormant = true;
                }
            }
        }
        AnswerOutcome::Settled {
            refused: refused.map(|e| e.to_string()),
            again: std::mem::take(&mut self.again),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use str0m::change::SdpOffer;

    use super::*;

    fn rtc() -> Rtc {
        Rtc::builder().set_rtp_mode(true).build(Instant::now())
    }

    fn downtrack(key: u64, sid: &str) -> DownTrack {
        DownTrack::for_test(key, sid, MediaKind::Video)
    }

    /// The client answers the offer and the server settles it.
    fn answer(
        neg: &mut SubscriberNegotiation,
        server: &mut Rtc,
        client: &mut Rtc,
        offer: lk::SessionDescription,
    ) {
        let offer = SdpOffer::from_sdp_string(&offer.sdp).expect("offer parses");
        let answer = client
            .sdp_api()
            .accept_offer(offer)
            .expect("client accepts the offer");
        let outcome = neg.answer(server, 0, answer);
        assert_eq!(
            outcome,
            AnswerOutcome::Settled {
                refused: None,
                again: false
            }
        );
    }

    /// Unsubscribe `key` as `Shard::unsubscribe` does; returns its section.
    fn park(
        neg: &mut SubscriberNegotiation,
        downtracks: &mut FxHashMap<TrackKey, DownTrack>,
        key: u64,
    ) -> Mid {
        let dt = downtracks.remove(&TrackKey(key)).expect("subscribed");
        let mid = dt.mid.expect("offered");
        neg.park(dt);
        mid
    }

    /// A subscriber connection with video track `TR_one` (key 1) offered and answered:
    /// (server, client, negotiation, downtracks).
    fn subscribed_to_one() -> (Rtc, Rtc, SubscriberNegotiation, FxHashMap<TrackKey, DownTrack>) {
        let (mut server, mut client) = (rtc(), rtc());
        let mut neg = SubscriberNegotiation::default();
        let mut downtracks = FxHashMap::default();
        downtracks.insert(TrackKey(1), downtrack(1, "TR_one"));
        neg.adds.push(TrackKey(1));
        let offer = neg.offer(&mut server, &mut downtracks).expect("an offer");
        answer(&mut neg, &mut server, &mut client, offer);
        (server, client, neg, downtracks)
    }

    fn msid(track: &str) -> Msid {
        Msid {
            stream: format!("PA_pub|{track}"),
            track: track.into(),
        }
    }

    #[test]
    fn a_section_is_recycled_only_once_the_client_answered_it_inactive() {
        let (mut server, mut client, mut neg, mut downtracks) = subscribed_to_one();

        let mid = park(&mut neg, &mut downtracks, 1);
        let offer = neg.offer(&mut server, &mut downtracks).expect("an offer");
        assert!(
            neg.recycle(MediaKind::Video, &TrackSid::new("TR_two"), msid("TR_two"))
                .is_none(),
            "not before the client answered the section inactive"
        );
        answer(&mut neg, &mut server, &mut client, offer);
        assert!(
            neg.recycle(MediaKind::Audio, &TrackSid::new("TR_two"), msid("TR_two"))
                .is_none(),
            "not for another kind"
        );
        let parked = neg
            .recycle(MediaKind::Video, &TrackSid::new("TR_two"), msid("TR_two"))
            .expect("dormant now");
        assert_eq!(parked.mid, mid);

        // The next offer reactivates the section under the new track's msid, which a str0m
        // client accepts like libwebrtc.
        let mut two = downtrack(2, "TR_two");
        two.mid = Some(mid);
        downtracks.insert(TrackKey(2), two);
        let offer = neg.offer(&mut server, &mut downtracks).expect("an offer");
        assert!(
            offer.sdp.contains("a=msid:PA_pub|TR_two TR_two\r\n"),
            "{}",
            offer.sdp
        );
        // (The ssrc's cname stays str0m's: it is what its RTCP reports carry.)
        assert!(
            !offer
                .sdp
                .lines()
                .any(|l| l.contains("msid:") && l.contains("TR_one")),
            "{}",
            offer.sdp
        );
        assert_eq!(
            offer.mid_to_track_id.get(&mid.to_string()).map(String::as_str),
            Some("TR_two")
        );
        assert_eq!(
            offer.sdp.matches("\r\nm=").count(),
            2,
            "data channels and one video section"
        );
        answer(&mut neg, &mut server, &mut client, offer);
        assert_eq!(
            client.media(mid).map(|m| m.direction()),
            Some(Direction::RecvOnly)
        );
    }

    #[test]
    fn a_track_subscribed_again_takes_another_section_and_its_old_one_stops_announcing_it() {
        // The Rust SDK dispatches a (mid, msid stream) pair once: back on its old section the
        // track would never be announced to the application again.
        let (mut server, mut client, mut neg, mut downtracks) = subscribed_to_one();
        let old = park(&mut neg, &mut downtracks, 1);
        let offer = neg.offer(&mut server, &mut downtracks).expect("an offer");
        answer(&mut neg, &mut server, &mut client, offer);

        // Dormant, but it carried TR_one: not for TR_one.
        let one = TrackSid::new("TR_one");
        assert!(neg.take_back(&one).is_none(), "its removal was offered");
        assert!(neg.recycle(MediaKind::Video, &one, msid("TR_one")).is_none());
        neg.retire_msid(&one);
        downtracks.insert(TrackKey(3), downtrack(3, "TR_one"));
        neg.adds.push(TrackKey(3));
        let offer = neg.offer(&mut server, &mut downtracks).expect("an offer");
        let new = downtracks[&TrackKey(3)].mid.expect("a section");
        assert_ne!(new, old);
        assert_eq!(
            offer.sdp.matches("a=msid:PA_pub|TR_one ").count(),
            1,
            "one section announces TR_one:\n{}",
            offer.sdp
        );
        answer(&mut neg, &mut server, &mut client, offer);

        // Another track may have the old section.
        let parked = neg
            .recycle(MediaKind::Video, &TrackSid::new("TR_two"), msid("TR_two"))
            .expect("the old section, for another track");
        assert_eq!(parked.mid, old);
    }

    #[test]
    fn a_section_parked_and_taken_back_before_any_offer_stays_its_tracks() {
        let (_, _, mut neg, mut downtracks) = subscribed_to_one();
        let mid = park(&mut neg, &mut downtracks, 1);
        let back = neg.take_back(&TrackSid::new("TR_one")).expect("not offered yet");
        assert_eq!(back.mid, mid);
        assert!(neg.removes.is_empty() && neg.parked.is_empty());
    }

    #[test]
    fn an_offer_given_up_for_a_resume_is_made_again_with_its_changes() {
        let (mut server, mut client) = (rtc(), rtc());
        let mut neg = SubscriberNegotiation::default();
        let mut downtracks = FxHashMap::default();
        downtracks.insert(TrackKey(1), downtrack(1, "TR_one"));
        neg.adds.push(TrackKey(1));
        neg.offer(&mut server, &mut downtracks).expect("an offer");
        // The client resumes before answering: str0m forgets what that offer carried.
        neg.give_up_offer(&mut downtracks);
        neg.ice_restart = true;
        let offer = neg
            .offer(&mut server, &mut downtracks)
            .expect("the track is offered again");
        let mid = downtracks[&TrackKey(1)].mid.expect("a section");
        assert!(
            offer.sdp.contains("a=msid:PA_pub|TR_one TR_one\r\n"),
            "{}",
            offer.sdp
        );
        assert!(
            offer.sdp.contains("m=application"),
            "the data channels are offered again"
        );
        answer(&mut neg, &mut server, &mut client, offer);
        assert!(
            server.media(mid).is_some(),
            "the server's connection has the section"
        );
        assert_eq!(
            client.media(mid).map(|m| m.direction()),
            Some(Direction::RecvOnly)
        );
    }
}
