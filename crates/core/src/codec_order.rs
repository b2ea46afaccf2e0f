//! A publisher sends the first codec of each media section of our answer, so the answer puts
//! first, in each video section a publisher sends on, the codec its track was announced with.
//!
//! livekit-client announces the codec the application chose (`videoCodec: 'vp9'`, `'h264'`)
//! in `AddTrackRequest` and offers every codec the browser has, VP8 first. LiveKit's server
//! puts the announced codec first in its answer; str0m answers in the order of its own codec
//! configuration (VP8 first). Without this, Chromium asked to publish VP9 sent VP8 under a
//! track announced as VP9. A section is matched to its track by mid once published, before
//! that by the offer's msid track id, which is the AddTrack's `cid` (as `publish.rs` pairs
//! them); `publish.rs` (`announced_codecs_first`) says which codecs are put first.
//!
//! Only the `m=` line's format list of video sections changes.

/// One media section of an SDP: its `m=` line and what this module reads of it.
struct Section<'a> {
    m_line: &'a str,
    mid: Option<&'a str>,
    /// The msid's track id.
    track: Option<&'a str>,
    /// The section's direction says the offerer sends on it.
    sends: bool,
    /// (payload type, codec name) from `a=rtpmap`.
    rtpmap: Vec<(&'a str, &'a str)>,
}

fn sections(sdp: &str) -> Vec<Section<'_>> {
    let mut out: Vec<Section> = Vec::new();
    for line in sdp.lines() {
        if line.starts_with("m=") {
            out.push(Section {
                m_line: line,
                mid: None,
                track: None,
                sends: false,
                rtpmap: Vec::new(),
            });
            continue;
        }
        let Some(s) = out.last_mut() else { continue };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            s.mid = Some(mid.trim());
        } else if let Some(msid) = line.strip_prefix("a=msid:") {
            s.track = msid.split_whitespace().nth(1);
        } else if line == "a=sendonly" || line == "a=sendrecv" {
            s.sends = true;
        } else if let Some(rest) = line.strip_prefix("a=rtpmap:") {
            if let Some((pt, encoding)) = rest.split_once(' ') {
                s.rtpmap.push((pt, encoding.split('/').next().unwrap_or("")));
            }
        }
    }
    out
}

/// `answer` with, in each video section of `offer` the publisher sends on, the payload types
/// of the codec `announced(mid, msid track id)` names (a mime type such as `video/AV1`, or a
/// bare codec name) moved to the front. Sections it cannot pair, codecs the answer does not
/// carry and anything malformed leave the answer as it is.
pub fn put_announced_first<'a>(
    offer: &str,
    answer: &str,
    announced: impl Fn(&str, Option<&str>) -> Option<&'a str>,
) -> String {
    let answered = sections(answer);
    // (where the m= line starts in `answer`, its length, the new line); m= lines of sections
    // offering the same codecs read alike, so they are told apart by position.
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for o in sections(offer) {
        if !o.m_line.starts_with("m=video ") || !o.sends {
            continue;
        }
        let Some(mid) = o.mid else { continue };
        let Some(mime) = announced(mid, o.track) else {
            continue;
        };
        let codec = mime.rsplit('/').next().unwrap_or(mime);
        let Some(a) = answered
            .iter()
            .find(|a| a.mid == Some(mid) && a.m_line.starts_with("m=video "))
        else {
            continue;
        };
        let mut parts = a.m_line.split(' ');
        let head: Vec<&str> = parts.by_ref().take(3).collect();
        let pts: Vec<&str> = parts.collect();
        let is_codec = |pt: &&str| {
            a.rtpmap
                .iter()
                .any(|(p, name)| p == pt && name.eq_ignore_ascii_case(codec))
        };
        let (mut first, rest): (Vec<&str>, Vec<&str>) = pts.iter().copied().partition(is_codec);
        if first.is_empty() || pts.first().is_some_and(is_codec) {
            continue;
        }
        first.extend(rest);
        let at = a.m_line.as_ptr() as usize - answer.as_ptr() as usize;
        edits.push((
            at,
            a.m_line.len(),
            format!("{} {}", head.join(" "), first.join(" ")),
        ));
    }
    let mut out = answer.to_string();
    edits.sort_by_key(|(at, _, _)| std::cmp::Reverse(*at));
    for (at, len, line) in edits {
        out.replace_range(at..at + len, &line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A section: kind, mid, msid track id, direction, [(pt, codec)].
    type Spec<'a> = (&'a str, &'a str, &'a str, &'a str, &'a [(&'a str, &'a str)]);

    fn sdp(sections: &[Spec]) -> String {
        let mut s = String::from("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
        for (kind, mid, track, dir, pts) in sections {
            let list: Vec<&str> = pts.iter().map(|(pt, _)| *pt).collect();
            s += &format!(
                "m={kind} 9 UDP/TLS/RTP/SAVPF {}\r\na=mid:{mid}\r\n",
                list.join(" ")
            );
            if !track.is_empty() {
                s += &format!("a=msid:stream {track}\r\n");
            }
            s += &format!("a={dir}\r\n");
            for (pt, name) in pts.iter() {
                s += &format!("a=rtpmap:{pt} {name}/90000\r\n");
            }
        }
        s
    }

    fn m_lines(sdp: &str) -> Vec<&str> {
        sdp.lines().filter(|l| l.starts_with("m=")).collect()
    }

    const BROWSER: &[(&str, &str)] = &[
        ("96", "VP8"),
        ("97", "rtx"),
        ("98", "VP9"),
        ("45", "AV1"),
        ("46", "rtx"),
    ];

    #[test]
    fn the_codec_a_track_was_announced_with_leads_its_section_of_the_answer() {
        let offer = sdp(&[
            ("audio", "0", "mic", "sendonly", &[("111", "opus"), ("63", "red")]),
            ("video", "1", "cam", "sendonly", BROWSER),
            ("video", "2", "share", "sendonly", BROWSER),
            ("video", "3", "", "recvonly", BROWSER),
        ]);
        let answer = sdp(&[
            ("audio", "0", "", "recvonly", &[("63", "red"), ("111", "opus")]),
            ("video", "1", "", "recvonly", BROWSER),
            ("video", "2", "", "recvonly", BROWSER),
            ("video", "3", "", "sendonly", BROWSER),
        ]);
        // The camera is pending under its cid; the share was published on mid 2 before.
        let out = put_announced_first(&offer, &answer, |mid, track| match (mid, track) {
            (_, Some("cam")) => Some("video/AV1"),
            ("2", _) => Some("VP9"),
            ("3", _) => Some("video/AV1"),
            _ => None,
        });
        assert_eq!(
            m_lines(&out),
            [
                "m=audio 9 UDP/TLS/RTP/SAVPF 63 111",
                "m=video 9 UDP/TLS/RTP/SAVPF 45 96 97 98 46",
                "m=video 9 UDP/TLS/RTP/SAVPF 98 96 97 45 46",
                // A section we send on is the subscriber's business.
                "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 45 46",
            ]
        );
        // Nothing but the m= lines changes.
        let rest = |s: &str| {
            s.lines()
                .filter(|l| !l.starts_with("m="))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(rest(&out), rest(&answer));
    }

    #[test]
    fn sections_with_the_same_codecs_are_told_apart() {
        let offer = sdp(&[
            ("video", "1", "a", "sendonly", BROWSER),
            ("video", "2", "b", "sendonly", BROWSER),
        ]);
        let answer = sdp(&[
            ("video", "1", "", "recvonly", BROWSER),
            ("video", "2", "", "recvonly", BROWSER),
        ]);
        let out = put_announced_first(&offer, &answer, |mid, _| (mid == "2").then_some("video/AV1"));
        assert_eq!(
            m_lines(&out),
            [
                "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 45 46",
                "m=video 9 UDP/TLS/RTP/SAVPF 45 96 97 98 46",
            ]
        );
    }

    #[test]
    fn unknown_tracks_codecs_and_malformed_sdps_leave_the_answer_alone() {
        let offer = sdp(&[("video", "1", "cam", "sendonly", BROWSER)]);
        let answer = sdp(&[("video", "1", "", "recvonly", BROWSER)]);
        assert_eq!(put_announced_first(&offer, &answer, |_, _| None), answer);
        assert_eq!(
            put_announced_first(&offer, &answer, |_, _| Some("video/H265")),
            answer
        );
        assert_eq!(
            put_announced_first(&offer, &answer, |_, _| Some("video/VP8")),
            answer
        );
        assert_eq!(
            put_announced_first(&offer, "garbage", |_, _| Some("AV1")),
            "garbage"
        );
        let odd = "m=video\r\na=mid:1\r\na=rtpmap:x";
        assert_eq!(put_announced_first(&offer, odd, |_, _| Some("AV1")), odd);
        assert_eq!(put_announced_first("", "", |_, _| Some("AV1")), "");
    }
}
