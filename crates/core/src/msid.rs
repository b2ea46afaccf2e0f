//! The msid of a recycled subscriber section.
//!
//! When a subscriber's section of a track that is gone is given to another track of the same
//! kind (LiveKit's transceiver reuse, so the subscriber's SDP stays as long as its busiest
//! moment, not its history; `docs/mline-recycling.md`), the section must announce the new
//! track: the SDKs read the publisher and track SIDs from the msid's stream id
//! (`PA_x|TR_y`), and libwebrtc fires `ontrack` again when a section that was inactive comes
//! back with a new msid. str0m fixes a section's msid when the section is added and offers no
//! way to change it, so Pylon keeps the msid each recycled section carries now and corrects
//! str0m's offer text: the section's `a=msid`, its `a=ssrc … msid:` lines and the session's
//! `a=msid-semantic` stream list. Nothing else in the offer depends on the msid, and str0m
//! never reads its own msid back from the answer (the subscriber sends nothing).

use std::collections::HashMap;

use str0m::media::Mid;

use crate::ids::{ParticipantSid, TrackSid};

/// What a section announces: `a=msid:<stream> <track>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msid {
    pub stream: String,
    pub track: String,
}

impl Msid {
    /// What a subscriber section of `track`, published by `publisher`, announces: the SDKs
    /// read both SIDs from the stream id.
    pub fn of(publisher: &ParticipantSid, track: &TrackSid) -> Msid {
        Msid {
            stream: format!("{publisher}|{track}"),
            track: track.as_str().to_string(),
        }
    }

    /// What a parked section announces once its track has moved to another section: no
    /// stream, and a track id of its own (`-` is JSEP's "no stream").
    pub fn inert(mid: Mid) -> Msid {
        Msid {
            stream: "-".to_string(),
            track: format!("parked-{mid}"),
        }
    }
}

/// `sdp` with the msid of every section named in `msids` replaced (and the session's
/// `a=msid-semantic: WMS` list made to match); `sdp` unchanged when `msids` is empty.
pub fn rewrite(sdp: &str, msids: &HashMap<Mid, Msid>) -> String {
    if msids.is_empty() {
        return sdp.to_string();
    }
    // Split into the session part and the media sections (each from its `m=` line).
    let lines: Vec<&str> = sdp.split("\r\n").collect();
    let starts: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].starts_with("m=")).collect();
    let session_end = starts.first().copied().unwrap_or(lines.len());
    let mut sections: Vec<Vec<String>> = Vec::with_capacity(starts.len());
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        let section = &lines[start..end];
        let mid = section
            .iter()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .map(str::trim);
        let new = mid.and_then(|m| msids.iter().find(|(k, _)| &***k == m).map(|(_, v)| v));
        sections.push(
            section
                .iter()
                .map(|l| match new {
                    Some(v) => rewrite_line(l, v),
                    None => l.to_string(),
                })
                .collect(),
        );
    }
    let streams = announced_streams(sections.iter().flatten().map(String::as_str));
    let mut out: Vec<String> = lines[..session_end]
        .iter()
        .map(|l| match l.strip_prefix("a=msid-semantic:") {
            Some(v) if v.trim_start().starts_with("WMS") && !streams.is_empty() => {
                format!("a=msid-semantic: WMS {}", streams.join(" "))
            }
            _ => l.to_string(),
        })
        .collect();
    out.extend(sections.into_iter().flatten());
    out.join("\r\n")
}

/// The stream ids the `a=msid` lines among `lines` announce, in order, once each (`-`, no
/// stream, left out): what the session's `a=msid-semantic: WMS` list names.
pub fn announced_streams<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut streams: Vec<&str> = Vec::new();
    for l in lines {
        if let Some(stream) = l
            .strip_prefix("a=msid:")
            .and_then(|v| v.split_whitespace().next())
        {
            if stream != "-" && !streams.contains(&stream) {
                streams.push(stream);
            }
        }
    }
    streams
}

fn rewrite_line(line: &str, msid: &Msid) -> String {
    if line.starts_with("a=msid:") {
        return format!("a=msid:{} {}", msid.stream, msid.track);
    }
    // a=ssrc:<ssrc> msid:<stream> <track>
    if let Some(rest) = line.strip_prefix("a=ssrc:") {
        if let Some((ssrc, attr)) = rest.split_once(' ') {
            if attr.starts_with("msid:") {
                return format!("a=ssrc:{ssrc} msid:{} {}", msid.stream, msid.track);
            }
        }
    }
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\n\
        o=str0m-123 1 2 IN IP4 0.0.0.0\r\n\
        s=-\r\n\
        t=0 0\r\n\
        a=group:BUNDLE 0 a1 v2\r\n\
        a=msid-semantic: WMS PA_x|TR_old PA_y|TR_b\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
        a=mid:0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n\
        a=mid:a1\r\n\
        a=sendonly\r\n\
        a=msid:PA_x|TR_old TR_old\r\n\
        a=ssrc:11 cname:c\r\n\
        a=ssrc:11 msid:PA_x|TR_old TR_old\r\n\
        a=ssrc:12 cname:c\r\n\
        a=ssrc:12 msid:PA_x|TR_old TR_old\r\n\
        a=ssrc-group:FID 11 12\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
        a=mid:v2\r\n\
        a=sendonly\r\n\
        a=msid:PA_y|TR_b TR_b\r\n\
        a=ssrc:13 msid:PA_y|TR_b TR_b\r\n";

    fn mid(s: &str) -> Mid {
        Mid::from(s)
    }

    #[test]
    fn only_the_recycled_section_announces_its_new_track() {
        let msids = HashMap::from([(
            mid("a1"),
            Msid {
                stream: "PA_z|TR_new".into(),
                track: "TR_new".into(),
            },
        )]);
        let out = rewrite(OFFER, &msids);
        assert!(!out.contains("TR_old"), "{out}");
        assert_eq!(out.matches("a=msid:PA_z|TR_new TR_new\r\n").count(), 1);
        assert!(out.contains("a=ssrc:11 msid:PA_z|TR_new TR_new\r\n"));
        assert!(out.contains("a=ssrc:12 msid:PA_z|TR_new TR_new\r\n"));
        assert!(
            out.contains("a=ssrc:11 cname:c\r\n"),
            "other ssrc attributes stay"
        );
        assert!(out.contains("a=msid:PA_y|TR_b TR_b\r\na=ssrc:13 msid:PA_y|TR_b TR_b"));
        assert!(out.contains("a=msid-semantic: WMS PA_z|TR_new PA_y|TR_b\r\n"));
        // Same lines otherwise (str0m parsing its own rewritten offers is checked where real
        // offers are made: `negotiation.rs`).
        assert_eq!(out.lines().count(), OFFER.lines().count());
    }

    #[test]
    fn nothing_recycled_nothing_changed() {
        assert_eq!(rewrite(OFFER, &HashMap::new()), OFFER);
        let unknown = HashMap::from([(
            mid("zz"),
            Msid {
                stream: "s".into(),
                track: "t".into(),
            },
        )]);
        assert_eq!(rewrite(OFFER, &unknown), OFFER);
    }
}
