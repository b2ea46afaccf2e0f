//! Subscribing on a single peer connection (`/rtc/v1`): the client offers, the server answers.
//!
//! On `/rtc/v1` the client has one PeerConnection and always offers; the server never does
//! (`docs/single-pc.md` §0, §2). A subscribed track is sent on a `recvonly` section the
//! client offered (a *slot*): the answer turns a bound slot `sendonly` with the msid
//! `PA_x|TR_y TR_y` and lists it in `mid_to_track_id`, and an unbound one `inactive`. When a
//! track has no free slot of its kind, the server asks for more with
//! `MediaSectionsRequirement{audios, videos}`; when a binding changes on a slot the client
//! already has, it asks for a new offer with `MediaSectionsRequirement{0, 0}`.
//!
//! A slot carries one track in its life. Unlike the server-offered sections of `/rtc`
//! (`negotiation.rs`), a slot freed by an unsubscription is not given to another track: the
//! Python SDK (Rust SDK 0.10 in libwebrtc) announces a track bound by an answer to a section
//! that carried another one, and libwebrtc decodes it, but no frame reaches the application's
//! stream (seen with `test_a_newcomer_is_seen_and_heard_on_the_sections_of_someone_who_left`).
//! LiveKit's server does not reuse them for another track either, as far as upstream pion goes:
//! `RemoveTrack` stops the sender but leaves it on its transceiver, and `AddTrack` only reuses a
//! transceiver without one. So the client's connection grows by one section per subscription
//! over the session (offers are capped at `limits::MAX_OFFER_SECTIONS`); a freed slot is
//! answered `inactive`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use livekit_protocol as lk;
use lk::signal_response::Message as Resp;
use str0m::change::SdpOffer;
use str0m::media::{MediaKind, Mid};
use tracing::{debug, trace};

use crate::ids::{ParticipantKey, TrackKey};
use crate::msid::Msid;
use crate::peer::{PcKind, PeerRef};
use crate::shard::Shard;
use crate::track::DownTrack;

/// A `recvonly` media section the client offered.
pub struct Slot {
    pub kind: MediaKind,
    /// The track it carries and the msid it announces.
    pub bound: Option<(TrackKey, Msid)>,
    /// It carried a track: it carries no other.
    pub used: bool,
}

/// The single peer connection's subscriber-side state.
#[derive(Default)]
pub struct SinglePcNegotiation {
    pub slots: BTreeMap<Mid, Slot>,
    /// Subscribed tracks without a slot, in subscription order.
    pub waiting: VecDeque<TrackKey>,
    /// Sections asked for (audio, video) that no offer has brought since.
    pub asked: [u32; 2],
    /// A requirement was sent and no offer has come since.
    pub offer_requested: bool,
    /// Something changed this turn (`Shard::flush_single_pc` decides whether to ask).
    pub due: bool,
    /// A binding changed on a slot the client has: its next answer must show it.
    pub changed: bool,
    /// The offer that came with the join request, until the JoinResponse is sent.
    pub initial_offer: Option<(String, u32)>,
}

/// One m-line of a client offer: its mid, kind and the client's direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedSection {
    pub mid: Mid,
    pub kind: MediaKind,
    /// The client receives on it (`recvonly`): a slot.
    pub client_receives_only: bool,
}

fn kind_index(kind: MediaKind) -> usize {
    usize::from(kind.is_video())
}

/// The audio and video sections of an offer, in order (the data section is skipped).
pub fn offered_sections(sdp: &str) -> Vec<OfferedSection> {
    let mut out = Vec::new();
    let mut current: Option<(MediaKind, Option<Mid>, bool)> = None;
    let flush = |c: Option<(MediaKind, Option<Mid>, bool)>, out: &mut Vec<OfferedSection>| {
        if let Some((kind, Some(mid), recvonly)) = c {
            out.push(OfferedSection {
                mid,
                kind,
                client_receives_only: recvonly,
            });
        }
    };
    for line in sdp.lines() {
        if let Some(rest) = line.strip_prefix("m=") {
            flush(current.take(), &mut out);
            current = match rest.split(' ').next() {
                Some("audio") => Some((MediaKind::Audio, None, false)),
                Some("video") => Some((MediaKind::Video, None, false)),
                _ => None,
            };
        } else if let Some((_, mid, recvonly)) = current.as_mut() {
            if let Some(m) = line.strip_prefix("a=mid:") {
                *mid = Some(Mid::from(m.trim()));
            } else if line.trim() == "a=recvonly" {
                *recvonly = true;
            }
        }
    }
    flush(current, &mut out);
    out
}

impl SinglePcNegotiation {
    /// A subscribed track waits for a slot.
    pub fn add(&mut self, tkey: TrackKey) {
        if !self.waiting.contains(&tkey) {
            self.waiting.push_back(tkey);
        }
        self.due = true;
    }

    /// An unsubscribed track leaves its slot (inactive in the next answer) or the queue.
    pub fn release(&mut self, dt: DownTrack) {
        self.waiting.retain(|k| *k != dt.track);
        if let Some(slot) = dt.mid.and_then(|m| self.slots.get_mut(&m)) {
            slot.bound = None;
            self.changed = true;
        }
        self.due = true;
    }

    /// Apply a client offer's sections: new `recvonly` ones become slots; a slot the client
    /// no longer receives on gives its track back to the queue (front, it had it first).
    pub fn on_offer(
        &mut self,
        sections: &[OfferedSection],
        downtracks: &mut rustc_hash::FxHashMap<TrackKey, DownTrack>,
    ) {
        self.offer_requested = false;
        self.asked = [0, 0];
        for s in sections {
            if s.client_receives_only {
                self.slots.entry(s.mid).or_insert(Slot {
                    kind: s.kind,
                    bound: None,
                    used: false,
                });
            } else if let Some(slot) = self.slots.remove(&s.mid) {
                if let Some((tkey, _)) = slot.bound {
                    if let Some(dt) = downtracks.get_mut(&tkey) {
                        dt.mid = None;
                    }
                    self.waiting.push_front(tkey);
                }
            }
        }
    }

    /// Bind waiting tracks to unused slots of their kind, lowest mid first. Returns the tracks
    /// bound now.
    pub fn bind(&mut self, downtracks: &mut rustc_hash::FxHashMap<TrackKey, DownTrack>) -> Vec<TrackKey> {
        let mut bound = Vec::new();
        let mut still = VecDeque::new();
        while let Some(tkey) = self.waiting.pop_front() {
            let Some(dt) = downtracks.get_mut(&tkey) else {
                continue;
            };
            let free = self
                .slots
                .iter()
                .find(|(_, s)| s.kind == dt.kind && !s.used)
                .map(|(mid, _)| *mid);
            let Some(mid) = free else {
                still.push_back(tkey);
                continue;
            };
            let slot = self.slots.get_mut(&mid).expect("found above");
            slot.bound = Some((tkey, Msid::of(&dt.publisher_sid, &dt.track_sid)));
            slot.used = true;
            dt.mid = Some(mid);
            bound.push(tkey);
        }
        self.waiting = still;
        bound
    }

    /// An answer went out: released slots are inactive at the client now.
    pub fn answered(&mut self) {
        self.changed = false;
    }

    /// What the answer announces: the msid of every bound slot, and the idle ones.
    pub fn answer_sections(&self) -> (HashMap<Mid, Msid>, Vec<Mid>) {
        let mut bound = HashMap::new();
        let mut idle = Vec::new();
        for (mid, s) in &self.slots {
            match &s.bound {
                Some((_, msid)) => {
                    bound.insert(*mid, msid.clone());
                }
                None => idle.push(*mid),
            }
        }
        (bound, idle)
    }

    /// `mid_to_track_id` of an answer: every bound slot (the full map, as clients expect).
    pub fn mid_to_track_id(&self) -> HashMap<String, String> {
        self.slots
            .iter()
            .filter_map(|(mid, s)| {
                let (_, msid) = s.bound.as_ref()?;
                Some((mid.to_string(), msid.track.clone()))
            })
            .collect()
    }

    /// The `MediaSectionsRequirement` to send now, if any: the sections still missing per kind
    /// beyond those asked for, or (0, 0) when only a new offer is needed (a track can bind to
    /// an unused slot, or a slot was released).
    pub fn requirement(
        &mut self,
        downtracks: &rustc_hash::FxHashMap<TrackKey, DownTrack>,
    ) -> Option<(u32, u32)> {
        self.due = false;
        let mut waiting = [0u32; 2];
        for dt in self.waiting.iter().filter_map(|k| downtracks.get(k)) {
            waiting[kind_index(dt.kind)] += 1;
        }
        let mut unused = [0u32; 2];
        for s in self.slots.values().filter(|s| !s.used) {
            unused[kind_index(s.kind)] += 1;
        }
        let bindable = (0..2).any(|k| waiting[k] > 0 && unused[k] > 0);
        let missing = [0, 1].map(|k| waiting[k].saturating_sub(unused[k]).saturating_sub(self.asked[k]));
        if missing != [0, 0] {
            self.asked[0] += missing[0];
            self.asked[1] += missing[1];
        } else if self.offer_requested || !(bindable || self.changed) {
            return None;
        }
        self.offer_requested = true;
        Some((missing[0], missing[1]))
    }
}

impl Shard {
    /// A client offer on a single peer connection: its sending sections are published as on
    /// `/rtc`, its `recvonly` ones are slots for subscribed tracks. Answered at once, with
    /// the offer's id, every bound slot in `mid_to_track_id`, then whatever sections are
    /// still missing asked for.
    pub(crate) fn on_single_pc_offer(&mut self, now: Instant, key: ParticipantKey, offer: SdpOffer, id: u32) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let Some(session) = p.session else { return };
        let offer_text = offer.to_sdp_string();
        trace!(participant = %p.sid, sdp = %offer_text, "single-PC offer sdp");
        let sections = offered_sections(&offer_text);
        let answer = match p.publisher.rtc.sdp_api().accept_offer(offer) {
            Ok(a) => a,
            Err(e) => return self.protocol_violation(now, session, &format!("offer refused: {e}")),
        };
        let answer_text = self.announced_codecs_first(key, &offer_text, &answer.to_sdp_string());
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        p.single.on_offer(&sections, &mut p.downtracks);
        let bound = p.single.bind(&mut p.downtracks);
        let (msids, idle) = p.single.answer_sections();
        let answer = lk::SessionDescription {
            r#type: "answer".into(),
            sdp: answer_sdp(&answer_text, &msids, &idle),
            id,
            mid_to_track_id: p.single.mid_to_track_id(),
        };
        p.single.answered();
        trace!(participant = %p.sid, sdp = %answer.sdp, "single-PC answer sdp");
        debug!(participant = %p.sid, id, slots = p.single.slots.len(), bound = bound.len(), waiting = p.single.waiting.len(), "single-PC answer");
        self.send(Some(session), Resp::Answer(answer));
        let peer = PeerRef {
            key,
            pc: PcKind::Publisher,
        };
        self.remember_ufrag(peer);
        self.start_new_downtracks(now, key);
        self.ask_sections(key);
        self.drain(now, peer);
    }

    /// Mark a single-PC participant's subscriptions changed: sections are asked for at the end
    /// of the turn, once for all of its changes.
    pub(crate) fn single_pc_changed(&mut self, key: ParticipantKey) {
        if let Some(p) = self.participants.get_mut(&key) {
            p.single.due = true;
            self.single_pc_due.push(key);
        }
    }

    pub(crate) fn flush_single_pc(&mut self) {
        let mut due = std::mem::take(&mut self.single_pc_due);
        due.sort_unstable();
        due.dedup();
        for key in due {
            if self.participants.get(&key).is_some_and(|p| p.single.due) {
                self.ask_sections(key);
            }
        }
    }

    /// Send the `MediaSectionsRequirement` the participant needs now, if any.
    fn ask_sections(&mut self, key: ParticipantKey) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let Some((audios, videos)) = p.single.requirement(&p.downtracks) else {
            return;
        };
        debug!(participant = %p.sid, audios, videos, "asking for media sections");
        let req = lk::MediaSectionsRequirement {
            num_audios: audios,
            num_videos: videos,
        };
        self.send_to(key, Resp::MediaSectionsRequirement(req));
    }
}

/// The answer's text as the client must see it: a bound slot announces its track's msid, an
/// idle one is `inactive` with no msid or SSRCs (str0m made every offered `recvonly` section
/// `sendonly` with a random msid).
pub fn answer_sdp(sdp: &str, bound: &HashMap<Mid, Msid>, idle: &[Mid]) -> String {
    let text = crate::msid::rewrite(sdp, bound);
    let mut out: Vec<&str> = Vec::new();
    let lines: Vec<&str> = text.split("\r\n").collect();
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].starts_with("m=") {
            out.push(lines[i]);
            i += 1;
            continue;
        }
        let end = (i + 1..lines.len())
            .find(|&j| lines[j].starts_with("m="))
            .unwrap_or(lines.len());
        let section = &lines[i..end];
        let is_idle = section
            .iter()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .is_some_and(|m| idle.iter().any(|x| &**x == m.trim()));
        for l in section {
            if is_idle {
                if *l == "a=sendonly" || *l == "a=sendrecv" {
                    out.push("a=inactive");
                    continue;
                }
                if l.starts_with("a=msid:") || l.starts_with("a=ssrc:") || l.starts_with("a=ssrc-group:") {
                    continue;
                }
            }
            out.push(l);
        }
        i = end;
    }
    // The session's stream list names what the sections announce now.
    let streams = crate::msid::announced_streams(out.iter().copied());
    let wms = format!("a=msid-semantic: WMS {}", streams.join(" "));
    out.iter()
        .map(|l| match l.starts_with("a=msid-semantic:") {
            true => wms.trim_end(),
            false => l,
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustc_hash::FxHashMap;

    const OFFER: &str = "v=0\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
        a=mid:0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
        a=mid:1\r\n\
        a=recvonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
        a=mid:2\r\n\
        a=recvonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
        a=mid:3\r\n\
        a=sendonly\r\n";

    fn section(mid: &str, kind: MediaKind) -> OfferedSection {
        OfferedSection {
            mid: Mid::from(mid),
            kind,
            client_receives_only: true,
        }
    }

    fn subscribe(
        neg: &mut SinglePcNegotiation,
        dts: &mut FxHashMap<TrackKey, DownTrack>,
        key: u64,
        kind: MediaKind,
    ) {
        dts.insert(
            TrackKey(key),
            DownTrack::for_test(key, &format!("TR_{key}"), kind),
        );
        neg.add(TrackKey(key));
    }

    #[test]
    fn tracks_bind_to_offered_slots_and_missing_ones_are_asked_for_once() {
        let (mut neg, mut dts) = (SinglePcNegotiation::default(), FxHashMap::default());
        neg.on_offer(
            &[section("0", MediaKind::Audio), section("1", MediaKind::Video)],
            &mut dts,
        );
        neg.answered();
        assert_eq!(neg.requirement(&dts), None, "nothing subscribed, nothing asked");
        subscribe(&mut neg, &mut dts, 1, MediaKind::Video);
        subscribe(&mut neg, &mut dts, 2, MediaKind::Video);
        subscribe(&mut neg, &mut dts, 3, MediaKind::Audio);
        // One video and the audio fit the offered slots; one more video section is needed.
        assert_eq!(neg.requirement(&dts), Some((0, 1)));
        assert_eq!(neg.requirement(&dts), None, "asked once");
        // The client re-offers with the section added.
        let offered = [
            section("0", MediaKind::Audio),
            section("1", MediaKind::Video),
            section("2", MediaKind::Video),
        ];
        neg.on_offer(&offered, &mut dts);
        assert_eq!(neg.bind(&mut dts), vec![TrackKey(1), TrackKey(2), TrackKey(3)]);
        assert_eq!(dts[&TrackKey(2)].mid, Some(Mid::from("2")));
        let map = neg.mid_to_track_id();
        assert_eq!((map.len(), map["1"].as_str()), (3, "TR_1"));
        neg.answered();
        assert_eq!(neg.requirement(&dts), None);
    }

    #[test]
    fn a_released_slot_is_answered_inactive_and_never_carries_another_track() {
        let (mut neg, mut dts) = (SinglePcNegotiation::default(), FxHashMap::default());
        subscribe(&mut neg, &mut dts, 1, MediaKind::Video);
        neg.on_offer(&[section("1", MediaKind::Video)], &mut dts);
        neg.bind(&mut dts);
        neg.answered();
        let dt = dts.remove(&TrackKey(1)).unwrap();
        neg.release(dt);
        // Only a new offer is needed, to answer the slot inactive.
        assert_eq!(neg.requirement(&dts), Some((0, 0)));
        neg.on_offer(&[section("1", MediaKind::Video)], &mut dts);
        assert!(neg.bind(&mut dts).is_empty());
        assert_eq!(
            neg.answer_sections().1,
            vec![Mid::from("1")],
            "idle in the answer"
        );
        neg.answered();
        // The same track subscribed again needs a section of its own.
        subscribe(&mut neg, &mut dts, 1, MediaKind::Video);
        assert_eq!(neg.requirement(&dts), Some((0, 1)));
    }

    #[test]
    fn sections_of_an_offer_with_the_client_direction() {
        let s = offered_sections(OFFER);
        assert_eq!(
            s.iter()
                .map(|s| (s.mid.to_string(), s.kind, s.client_receives_only))
                .collect::<Vec<_>>(),
            vec![
                ("1".into(), MediaKind::Audio, true),
                ("2".into(), MediaKind::Video, true),
                ("3".into(), MediaKind::Video, false),
            ]
        );
    }

    #[test]
    fn idle_sections_are_answered_inactive_without_msid_and_bound_ones_carry_the_track() {
        let answer = "v=0\r\na=msid-semantic: WMS abc\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=sendonly\r\na=msid:abc def\r\n\
            a=ssrc:5 cname:x\r\na=ssrc:5 msid:abc def\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=sendonly\r\na=msid:ghi jkl\r\n\
            a=ssrc:6 cname:x\r\na=ssrc:7 cname:x\r\na=ssrc-group:FID 6 7\r\n";
        let bound = HashMap::from([(
            Mid::from("1"),
            Msid {
                stream: "PA_a|TR_b".into(),
                track: "TR_b".into(),
            },
        )]);
        let out = answer_sdp(answer, &bound, &[Mid::from("2")]);
        assert!(
            out.contains("a=mid:1\r\na=sendonly\r\na=msid:PA_a|TR_b TR_b\r\n"),
            "{out}"
        );
        assert!(out.contains("a=ssrc:5 msid:PA_a|TR_b TR_b"), "{out}");
        let video = &out[out.find("a=mid:2").unwrap()..];
        assert!(video.starts_with("a=mid:2\r\na=inactive"), "{out}");
        assert!(!video.contains("a=msid") && !video.contains("a=ssrc"), "{out}");
        assert!(out.contains("a=msid-semantic: WMS PA_a|TR_b\r\n"), "{out}");
    }
}
