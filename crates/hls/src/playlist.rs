//! Playlists: the multivariant playlist and the LL-HLS media playlist (RFC 8216bis with the
//! low-latency tags). No crate writes EXT-X-PART, PRELOAD-HINT, SERVER-CONTROL or SKIP, so
//! this is ours; m3u8-rs parses it in the tests.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::segmenter::Segmenter;

/// File names inside a stream's directory. `sid` changes with every publish, so that a URL
/// always names the same bytes and segments can be cached as immutable.
pub fn segment_uri(sid: &str, msn: u64) -> String {
    format!("{sid}-{msn}.m4s")
}

/// A part's file name.
pub fn part_uri(sid: &str, msn: u64, part: usize) -> String {
    format!("{sid}-{msn}.{part}.m4s")
}

/// An init segment's file name.
pub fn init_uri(sid: &str, init: u32) -> String {
    format!("{sid}-init{init}.mp4")
}

/// The multivariant playlist: one variant per segmenter (a simulcast source's layers, top
/// first), each with its media playlist's URI. Variants without a complete segment yet are
/// left out (their codecs and bitrate are not known).
pub fn multivariant(variants: &[(&Segmenter, &str)]) -> String {
    let mut s = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for (seg, media_uri) in variants {
        if !seg.has_segment() && variants.len() > 1 {
            continue;
        }
        let codecs: Vec<String> = seg.tracks().map(|t| t.codecs()).collect();
        let bandwidth = if seg.peak_bps() > 0 {
            seg.peak_bps()
        } else {
            2_000_000
        };
        let _ = write!(
            s,
            "#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},CODECS=\"{}\"",
            codecs.join(",")
        );
        let video = seg.tracks().find_map(|t| t.dimensions());
        if let Some((w, h)) = video {
            let _ = write!(s, ",RESOLUTION={w}x{h}");
        }
        let _ = write!(s, "\n{media_uri}\n");
    }
    s
}

/// Where another rendition of the same stream stands, for EXT-X-RENDITION-REPORT: a player
/// switching to it makes its first blocking request from these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionReport {
    /// Its media playlist, relative to this one.
    pub uri: String,
    pub last_msn: u64,
    pub last_part: usize,
}

impl RenditionReport {
    /// The report for `seg`'s playlist at `uri`; `None` before it has a part.
    pub fn of(seg: &Segmenter, uri: &str) -> Option<RenditionReport> {
        let last = seg.segments().iter().rev().find(|s| !s.parts.is_empty())?;
        Some(RenditionReport {
            uri: uri.to_owned(),
            last_msn: last.msn,
            last_part: last.parts.len() - 1,
        })
    }
}

/// How the media playlist is asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaOptions<'a> {
    /// A delta update (`_HLS_skip=YES`): segments older than CAN-SKIP-UNTIL are left out.
    pub skip: bool,
    /// The stream ended: EXT-X-ENDLIST, no preload hint.
    pub ended: bool,
    /// A query put on every URI in the playlist (`token=…`: a signed playback token travels
    /// with the player's requests while the path, which a CDN may cache by, stays the same).
    /// The caller vouches that it needs no escaping in a quoted attribute.
    pub uri_query: Option<&'a str>,
}

/// Seconds with millisecond precision, as the tags want them.
fn secs(d: f64) -> String {
    format!("{d:.3}")
}

fn date(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (days, rem) = (d.as_secs() / 86_400, d.as_secs() % 86_400);
    let (y, m, dd) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// `YYYYmmdd-HHMMSS` (UTC) for `secs` since 1970, for file names.
pub fn compact_date(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The TARGETDURATION: the configured target or the longest segment, whole seconds up.
pub fn target_duration(seg: &Segmenter) -> u64 {
    let configured = seg.config().target_duration.as_secs_f64();
    seg.segments()
        .iter()
        .filter(|s| s.data.is_some())
        .map(|s| s.duration())
        .fold(configured, f64::max)
        .round()
        .max(1.0) as u64
}

/// The LL-HLS media playlist.
/// `reports`: the stream's other renditions (EXT-X-RENDITION-REPORT).
pub fn media(
    seg: &Segmenter,
    sid: &str,
    opts: MediaOptions,
    reports: &[RenditionReport],
) -> String {
    let q = |uri: String| match opts.uri_query {
        Some(query) => format!("{uri}?{query}"),
        None => uri,
    };
    let target = target_duration(seg);
    let part_target = seg.config().part_duration.as_secs_f64();
    let skip_until = 6 * target;
    let segments = seg.segments();
    let mut s = String::with_capacity(4096);
    s.push_str("#EXTM3U\n#EXT-X-VERSION:9\n");
    let _ = writeln!(s, "#EXT-X-TARGETDURATION:{target}");
    let _ = writeln!(
        s,
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={},CAN-SKIP-UNTIL={}",
        secs(3.0 * part_target),
        skip_until
    );
    let _ = writeln!(s, "#EXT-X-PART-INF:PART-TARGET={}", secs(part_target));
    let first = segments.front().map_or(0, |f| f.msn);
    let _ = writeln!(s, "#EXT-X-MEDIA-SEQUENCE:{first}");
    let _ = writeln!(
        s,
        "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
        seg.discontinuity_sequence()
    );

    // Parts are listed for the segments of the last three target durations (RFC 8216bis
    // §4.4.4.9 lets older ones go).
    let total: f64 = segments.iter().map(|x| x.duration()).sum();
    let mut start = 0.0;
    let mut skipped = 0;
    if opts.skip && total > skip_until as f64 {
        // Only whole segments that end more than CAN-SKIP-UNTIL before the end of the
        // playlist, none with a discontinuity.
        for x in segments.iter() {
            let end = start + x.duration();
            if total - end <= skip_until as f64 || x.data.is_none() || x.discontinuity {
                break;
            }
            start = end;
            skipped += 1;
        }
        if skipped > 0 {
            let _ = writeln!(s, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }
    }
    let mut map = None;
    let mut elapsed = start;
    for x in segments.iter().skip(skipped) {
        if x.discontinuity {
            s.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if map != Some(x.init) {
            let _ = writeln!(s, "#EXT-X-MAP:URI=\"{}\"", q(init_uri(sid, x.init)));
            map = Some(x.init);
        }
        let _ = writeln!(s, "#EXT-X-PROGRAM-DATE-TIME:{}", date(x.program_date_time));
        let recent = total - elapsed <= 3.0 * target as f64 || x.data.is_none();
        if recent {
            for (i, p) in x.parts.iter().enumerate() {
                let _ = write!(
                    s,
                    "#EXT-X-PART:DURATION={},URI=\"{}\"",
                    secs(p.duration),
                    q(part_uri(sid, x.msn, i))
                );
                s.push_str(if p.independent {
                    ",INDEPENDENT=YES\n"
                } else {
                    "\n"
                });
            }
        }
        if x.data.is_some() {
            let _ = writeln!(s, "#EXTINF:{},", secs(x.duration()));
            let _ = writeln!(s, "{}", q(segment_uri(sid, x.msn)));
        }
        elapsed += x.duration();
    }
    if opts.ended {
        s.push_str("#EXT-X-ENDLIST\n");
    } else if let Some((msn, part)) = seg.next_part() {
        let _ = writeln!(
            s,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
            q(part_uri(sid, msn, part))
        );
    }
    for r in reports {
        let _ = writeln!(
            s,
            "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={},LAST-PART={}",
            q(r.uri.clone()),
            r.last_msn,
            r.last_part
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_iso_8601_utc() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_000_123);
        assert_eq!(date(t), "2026-11-18T11:06:40.123Z");
        assert_eq!(date(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(compact_date(1_795_000_000), "20261118-110640");
    }
}
