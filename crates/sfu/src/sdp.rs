//! Narrowing the server's own subscriber offers to the codec each track actually carries.
//!
//! str0m offers every configured codec on every m-line. A subscriber must never be offered a
//! codec it will not get (its browser would pick a preference the SFU cannot honour), so before
//! an offer leaves, each track's m-line keeps only the payload types of the publisher's codec
//! and its RTX. The answer then negotiates exactly that codec or rejects the m-line.

use std::collections::HashMap;

/// Rewrites `sdp` so that the m-line with mid `M` lists only the payload types in `keep[M]`.
/// m-lines not in `keep` are left alone.
pub fn restrict_payload_types(sdp: &str, keep: &HashMap<String, Vec<u8>>) -> String {
    let mut out = String::with_capacity(sdp.len());
    let mut section: Vec<&str> = Vec::new();
    for line in sdp.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with("m=") && !section.is_empty() {
            flush(&mut out, &section, keep);
            section.clear();
        }
        section.push(line);
    }
    flush(&mut out, &section, keep);
    out
}

fn flush(out: &mut String, section: &[&str], keep: &HashMap<String, Vec<u8>>) {
    let mid = section.iter().find_map(|l| l.strip_prefix("a=mid:"));
    let pts = mid.and_then(|m| keep.get(m.trim()));
    for line in section {
        let kept = match pts {
            None => Some((*line).to_owned()),
            Some(pts) => filter_line(line, pts),
        };
        if let Some(l) = kept {
            out.push_str(&l);
            out.push_str("\r\n");
        }
    }
}

fn filter_line(line: &str, pts: &[u8]) -> Option<String> {
    if let Some(rest) = line.strip_prefix("m=") {
        // m=<media> <port> <proto> <fmt> ...
        let mut parts = rest.split(' ');
        let head: Vec<&str> = parts.by_ref().take(3).collect();
        let fmts: Vec<&str> = parts
            .filter(|f| f.parse::<u8>().is_ok_and(|pt| pts.contains(&pt)))
            .collect();
        return Some(format!("m={} {}", head.join(" "), fmts.join(" ")));
    }
    for prefix in ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"] {
        if let Some(rest) = line.strip_prefix(prefix) {
            let pt = rest.split([' ', ':']).next().unwrap_or("");
            if pt == "*" {
                return Some(line.to_owned());
            }
            return pt
                .parse::<u8>()
                .ok()
                .filter(|pt| pts.contains(pt))
                .map(|_| line.to_owned());
        }
    }
    Some(line.to_owned())
}

/// One m-line of an SDP, as its author sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    /// Audio or video.
    pub kind: crate::signal::TrackKind,
    /// `a=mid`.
    pub mid: String,
    /// The author sends on it (`sendonly`/`sendrecv`).
    pub sends: bool,
    /// The author receives on it (`recvonly`/`sendrecv`).
    pub receives: bool,
    /// Payload types in the author's order of preference.
    pub pts: Vec<u8>,
}

/// The audio and video m-lines of `sdp` that have a mid and a port (not rejected), in order.
pub fn media_sections(sdp: &str) -> Vec<MediaSection> {
    use crate::signal::TrackKind;
    let mut out = Vec::new();
    for section in sdp.split("\nm=").skip(1) {
        let mut lines = section.lines();
        let mline: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
        let kind = match mline.first() {
            Some(&"audio") => TrackKind::Audio,
            Some(&"video") => TrackKind::Video,
            _ => continue,
        };
        if mline.get(1) == Some(&"0") {
            continue;
        }
        let pts = mline
            .iter()
            .skip(3)
            .filter_map(|p| p.parse().ok())
            .collect();
        let (mut sends, mut receives, mut mid) = (true, true, None);
        for l in lines.map(str::trim) {
            match l {
                "a=sendonly" => (sends, receives) = (true, false),
                "a=recvonly" => (sends, receives) = (false, true),
                "a=inactive" => (sends, receives) = (false, false),
                "a=sendrecv" => (sends, receives) = (true, true),
                _ => {
                    if let Some(m) = l.strip_prefix("a=mid:") {
                        mid = Some(m.trim().to_owned());
                    }
                }
            }
        }
        if let Some(mid) = mid {
            out.push(MediaSection {
                kind,
                mid,
                sends,
                receives,
                pts,
            });
        }
    }
    out
}

/// Reorders each m-line's payload types in `answer` to follow their order in `offer` (matched by
/// mid). Browsers send with the first codec of the answer, and str0m answers in its own
/// preference order; this lets the publisher's choice (`setCodecPreferences`) stand.
pub fn follow_offer_order(answer: &str, offer: &str) -> String {
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    for section in offer.split("\r\nm=").skip(1) {
        let fmts: Vec<String> = section
            .split("\r\n")
            .next()
            .unwrap_or("")
            .split(' ')
            .skip(3)
            .map(str::to_owned)
            .collect();
        if let Some(mid) = section.split("\r\n").find_map(|l| l.strip_prefix("a=mid:")) {
            order.insert(mid.trim().to_owned(), fmts);
        }
    }
    let mut out = String::with_capacity(answer.len());
    let mut parts = answer.split("\r\nm=");
    out.push_str(parts.next().unwrap_or(""));
    for section in parts {
        out.push_str("\r\nm=");
        let (mline, rest) = section.split_once("\r\n").unwrap_or((section, ""));
        let mid = rest.split("\r\n").find_map(|l| l.strip_prefix("a=mid:"));
        let Some(want) = mid.and_then(|m| order.get(m.trim())) else {
            out.push_str(section);
            continue;
        };
        let mut words: Vec<&str> = mline.split(' ').collect();
        if words.len() > 3 {
            let pos = |f: &&str| want.iter().position(|w| w == f).unwrap_or(usize::MAX);
            words[3..].sort_by_key(pos);
        }
        out.push_str(&words.join(" "));
        if !rest.is_empty() || section.contains("\r\n") {
            out.push_str("\r\n");
        }
        out.push_str(rest);
    }
    out
}

/// In each video m-line of `answer` whose first codec is VP8, moves the H.264 payload types
/// (in their order) ahead of everything else. The offerer sends with the first codec of the
/// answer (RFC 3264 §6.1), so a browser that listed VP8 first sends H.264. m-lines without
/// H.264, or not led by VP8, are left as they are.
pub fn prefer_h264_over_vp8(answer: &str) -> String {
    let mut out = String::with_capacity(answer.len());
    let mut parts = answer.split("\r\nm=");
    out.push_str(parts.next().unwrap_or(""));
    for section in parts {
        out.push_str("\r\nm=");
        let (mline, rest) = section.split_once("\r\n").unwrap_or((section, ""));
        let codec_of = |pt: &str| {
            rest.split("\r\n").find_map(|l| {
                let (p, enc) = l.strip_prefix("a=rtpmap:")?.split_once(' ')?;
                (p == pt).then(|| enc.split('/').next().unwrap_or("").to_ascii_uppercase())
            })
        };
        let mut words: Vec<&str> = mline.split(' ').collect();
        let leads_with_vp8 = words.first() == Some(&"video")
            && words.get(3).and_then(|pt| codec_of(pt)).as_deref() == Some("VP8");
        if leads_with_vp8 && words.len() > 3 {
            let is_h264 = |pt: &&str| codec_of(pt).as_deref() == Some("H264");
            // A stable sort: H.264 first, everything else keeps its place behind it.
            words[3..].sort_by_key(|pt| !is_h264(pt));
        }
        out.push_str(&words.join(" "));
        if !rest.is_empty() || section.contains("\r\n") {
            out.push_str("\r\n");
        }
        out.push_str(rest);
    }
    out
}

/// Adds `usedtx=1` to the format parameters of every Opus payload type in `answer` (an
/// answer to a publisher). The parameter states the receiver's preference (RFC 7587 §6.1), so
/// a browser that reads it sends discontinuously: a frame every 400 ms while its microphone is
/// silent instead of fifty a second. Receivers conceal the gaps with comfort noise; the hub's
/// Opus-to-AAC stage fills them with silence. An Opus payload type without an `a=fmtp` line
/// gets one.
pub fn request_opus_dtx(answer: &str) -> String {
    let lines: Vec<&str> = answer.split("\r\n").collect();
    let opus: Vec<&str> = lines
        .iter()
        .filter_map(|l| {
            let (pt, enc) = l.strip_prefix("a=rtpmap:")?.split_once(' ')?;
            enc.to_ascii_lowercase().starts_with("opus/").then_some(pt)
        })
        .collect();
    let has_fmtp = |pt: &str| {
        lines.iter().any(|l| {
            l.strip_prefix("a=fmtp:")
                .and_then(|r| r.split_once(' '))
                .is_some_and(|(p, _)| p == pt)
        })
    };
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + 2);
    for line in &lines {
        let fmtp = line
            .strip_prefix("a=fmtp:")
            .and_then(|r| r.split_once(' '))
            .filter(|(pt, _)| opus.contains(pt));
        match fmtp {
            Some((_, params)) if params.split(';').any(|p| p.trim().starts_with("usedtx=")) => {
                out.push((*line).to_owned());
            }
            Some(_) => out.push(format!("{line};usedtx=1")),
            None => {
                out.push((*line).to_owned());
                if let Some((pt, _)) = line
                    .strip_prefix("a=rtpmap:")
                    .and_then(|r| r.split_once(' '))
                    && opus.contains(&pt)
                    && !has_fmtp(pt)
                {
                    out.push(format!("a=fmtp:{pt} usedtx=1"));
                }
            }
        }
    }
    out.join("\r\n")
}

/// An SDP parse error as a client may read it. str0m's parser errors name the position as a
/// pointer (`Parse error at PointerOffset(0x7f…)`): an address of the server's heap, which
/// tells an attacker about its memory layout and the client nothing. It is cut out.
pub fn client_error(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("PointerOffset(") {
        out.push_str(rest[..at].trim_end().trim_end_matches(" at"));
        rest = match rest[at..].find(')') {
            Some(end) => &rest[at + end + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_show_no_address() {
        let e = "SDP parse: Parse error at PointerOffset(0x7f681804bbe0) Unexpected `t` Expected `v` sdp line";
        assert_eq!(
            client_error(&e),
            "SDP parse: Parse error Unexpected `t` Expected `v` sdp line"
        );
        assert_eq!(client_error(&"fine"), "fine");
        assert_eq!(client_error(&"x PointerOffset(0x1"), "x");
        let real = str0m::change::SdpOffer::from_sdp_string("t=0 0\r\n").unwrap_err();
        assert!(
            !client_error(&real).contains("0x"),
            "{}",
            client_error(&real)
        );
    }

    #[test]
    fn dtx_is_asked_for_on_every_opus_payload_type_once() {
        let answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\na=rtpmap:111 opus/48000/2\r\n\
            a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 109\r\na=rtpmap:109 OPUS/48000/2\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\na=fmtp:96 x=1\r\n";
        let out = request_opus_dtx(answer);
        assert!(
            out.contains("a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1\r\n"),
            "{out}"
        );
        assert!(
            out.contains("a=fmtp:63 111/111\r\n"),
            "RED untouched: {out}"
        );
        assert!(
            out.contains("a=rtpmap:109 OPUS/48000/2\r\na=fmtp:109 usedtx=1\r\n"),
            "{out}"
        );
        assert!(out.contains("a=fmtp:96 x=1\r\n"), "video untouched: {out}");
        assert!(out.ends_with("\r\n"));
        // Applied twice, nothing more.
        assert_eq!(request_opus_dtx(&out), out);
        // A client that said usedtx=0 is not overridden.
        let zero = "m=audio 9 X 111\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 usedtx=0\r\n";
        assert_eq!(request_opus_dtx(zero), zero);
    }

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n\
        a=fmtp:111 minptime=10\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n\
        a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtpmap:97 rtx/90000\r\n\
        a=fmtp:97 apt=96\r\na=rtpmap:98 H264/90000\r\na=fmtp:98 packetization-mode=1\r\n\
        a=rtpmap:99 rtx/90000\r\na=fmtp:99 apt=98\r\na=ssrc:1 cname:x\r\n";

    #[test]
    fn keeps_only_the_listed_payload_types_of_listed_mids() {
        let keep = HashMap::from([("1".to_string(), vec![98, 99])]);
        let out = restrict_payload_types(OFFER, &keep);
        assert!(
            out.contains("m=video 9 UDP/TLS/RTP/SAVPF 98 99\r\n"),
            "{out}"
        );
        assert!(!out.contains("VP8"));
        assert!(!out.contains("a=rtcp-fb:96"));
        assert!(!out.contains("apt=96"));
        assert!(out.contains("a=fmtp:99 apt=98"));
        assert!(out.contains("a=ssrc:1 cname:x"));
        // The audio section is untouched.
        assert!(out.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\n"));
        assert!(out.contains("a=rtpmap:0 PCMU/8000"));
        assert!(out.starts_with("v=0\r\n"));
    }

    #[test]
    fn answer_follows_the_offers_codec_order() {
        let offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 98 99 96 97\r\na=mid:1\r\n";
        let answer = "v=0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99\r\na=mid:1\r\na=x\r\n";
        let out = follow_offer_order(answer, offer);
        assert_eq!(
            out,
            "v=0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 98 99 96 97\r\na=mid:1\r\na=x\r\n"
        );
        // Unknown mids and sections are left alone.
        let other = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=mid:0\r\n";
        assert_eq!(follow_offer_order(other, offer), other);
    }

    #[test]
    fn h264_goes_ahead_of_a_leading_vp8_only() {
        let out = prefer_h264_over_vp8(OFFER);
        assert!(
            out.contains("m=video 9 UDP/TLS/RTP/SAVPF 98 96 97 99\r\n"),
            "{out}"
        );
        assert!(out.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\n"));
        assert_eq!(out.len(), OFFER.len());
        // Led by something else (a choice made on purpose), or no H.264: unchanged.
        let vp9 =
            "v=0\r\nm=video 9 X 100 98\r\na=rtpmap:100 VP9/90000\r\na=rtpmap:98 H264/90000\r\n";
        assert_eq!(prefer_h264_over_vp8(vp9), vp9);
        let vp8_only =
            "v=0\r\nm=video 9 X 96 97\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\n";
        assert_eq!(prefer_h264_over_vp8(vp8_only), vp8_only);
    }

    #[test]
    fn media_sections_and_directions() {
        let s = media_sections(OFFER);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].kind, crate::signal::TrackKind::Audio);
        assert_eq!(
            (s[0].mid.as_str(), s[0].sends, s[0].receives),
            ("0", true, false)
        );
        assert_eq!(s[1].pts, vec![96, 97, 98, 99]);
        assert_eq!((s[1].sends, s[1].receives), (true, true));
        let recv = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v\r\na=recvonly\r\n\
                    m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:a\r\n";
        let s = media_sections(recv);
        assert_eq!(s.len(), 1, "a rejected m-line (port 0) is skipped");
        assert_eq!((s[0].sends, s[0].receives), (false, true));
        assert!(media_sections("garbage").is_empty());
    }

    #[test]
    fn nothing_to_keep_changes_nothing() {
        assert_eq!(restrict_payload_types(OFFER, &HashMap::new()), OFFER);
    }
}
