//! The little SDP reading str0m does not expose: the remote `a=msid` of each m-section.

use std::collections::HashMap;

/// The `a=msid` of one m-section: stream id (`PA_x|TR_y` from Pylon) and track id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Msid {
    pub stream: String,
    pub track: String,
}

/// `a=mid` → `a=msid` for every m-section of `sdp` that has both.
pub(crate) fn msids(sdp: &str) -> HashMap<String, Msid> {
    let mut out = HashMap::new();
    let mut mid: Option<String> = None;
    let mut msid: Option<Msid> = None;
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            if let (Some(m), Some(s)) = (mid.take(), msid.take()) {
                out.insert(m, s);
            }
            (mid, msid) = (None, None);
        } else if let Some(m) = line.strip_prefix("a=mid:") {
            mid = Some(m.trim().to_string());
        } else if let Some(v) = line.strip_prefix("a=msid:") {
            let mut parts = v.split_whitespace();
            if let (Some(stream), Some(track)) = (parts.next(), parts.next()) {
                msid = Some(Msid {
                    stream: stream.to_string(),
                    track: track.to_string(),
                });
            }
        }
    }
    if let (Some(m), Some(s)) = (mid, msid) {
        out.insert(m, s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msid_is_read_per_m_section() {
        let sdp = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=msid:PA_a|TR_b TR_b\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:PA_a|TR_c TR_c\r\na=mid:2\r\n";
        let m = msids(sdp);
        assert_eq!(m.len(), 2);
        assert_eq!(m["1"].stream, "PA_a|TR_b");
        assert_eq!(m["2"].track, "TR_c");
    }
}
