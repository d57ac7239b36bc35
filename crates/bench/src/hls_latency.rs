//! Scenario `hls-latency`: how soon a frame published over RTMP can be fetched by an LL-HLS
//! client (the "availability latency").
//!
//! A publisher of ours sends H.264 over RTMP at 30 fps, keyframe every second; every frame
//! carries an SEI `user_data_unregistered` message with the wall-clock time it was written to
//! the socket. A client behaves like an LL-HLS player at the live edge: for the part the
//! playlist hints at, it asks for the blocking playlist and the part at once (the server holds
//! both until the part exists). For every frame in every part it receives, latency = the time
//! the part's last byte arrived − the frame's SEI time. Both ends share this machine's clock.
//!
//! The frames are not a picture: the segmenter never decodes, it only needs NAL unit types,
//! keyframe flags and times, so filler slices measure the same path as an encoder's output.
//! The figure is what the server adds (ingest, packaging, part duration, HTTP); a player adds
//! its hold-back (`PART-HOLD-BACK`, three part targets) on top, which the e2e test reports as
//! hls.js's live latency.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use serde_json::json;
use testkit::live::free_port;
use testkit::server::TestServer;

/// Marks our SEI messages (a random UUID; players ignore unregistered user data).
const SEI_UUID: [u8; 16] = *b"onair-lat-probe!";
/// x264's avcC for 640x360 baseline: a real decoder configuration for the init segment.
const AVCC_360P: [u8; 40] = [
    0x01, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf,
    0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x58, 0xba,
    0x80, 0x01, 0x00, 0x04, 0x68, 0xce, 0x0f, 0xc8,
];
const FPS: u32 = 30;
/// About 1 Mbit/s: 30 KB keyframes, 3 KB otherwise.
const KEY_BYTES: usize = 30_000;
const DELTA_BYTES: usize = 3_000;

type Error = String;

/// Runs the scenario for `secs` against `bin` and prints the figures as JSON; 0 when the
/// client measured frames.
pub fn run(bin: &str, secs: Duration) -> i32 {
    let rtmp_port = free_port();
    let listen = format!("127.0.0.1:{rtmp_port}");
    let server = TestServer::start(bin, &[("ONAIR_RTMP_LISTEN", &listen)]);
    let rtmp: SocketAddr = ([127, 0, 0, 1], rtmp_port).into();
    let publisher =
        std::thread::spawn(move || publish(rtmp, "live", "lat", secs + Duration::from_secs(6)));
    let client = measure(server.http_port, "live/lat", secs);
    let published = publisher
        .join()
        .unwrap_or_else(|_| Err("publisher panicked".into()));
    if let Err(e) = &published {
        eprintln!("hls-latency: publisher: {e}");
    }
    let Measured {
        mut all,
        mut first,
        mut missed,
        parts,
    } = match client {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hls-latency: client: {e}");
            return 1;
        }
    };
    let q = |v: &mut Vec<f64>, p: f64| -> f64 {
        v.sort_by(f64::total_cmp);
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let report = json!({
        "scenario": "hls-latency",
        "part_ms": 200,
        "parts": parts,
        "frames": all.len(),
        "frame_latency_ms": { "median": q(&mut all, 0.5), "p95": q(&mut all, 0.95), "max": q(&mut all, 1.0) },
        "first_frame_of_part_latency_ms": { "median": q(&mut first, 0.5), "p95": q(&mut first, 0.95), "max": q(&mut first, 1.0) },
        "hinted_parts_never_made": missed.len(),
        "their_404_after_ms_max": q(&mut missed, 1.0),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    drop(server);
    if all.is_empty() { 1 } else { 0 }
}

/// Microseconds since the Unix epoch.
pub(crate) fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One frame's NAL units, length-prefixed: our SEI, then a filler slice.
fn frame_nals(keyframe: bool, stamp_us: u64) -> Vec<u8> {
    // SEI: payload type 5 (user data unregistered), the UUID, then the time as 16 ASCII
    // digits, which never contain the 00 00 0x runs that would need emulation prevention.
    let digits = format!("{stamp_us:016}");
    let mut sei = vec![0x06, 5, (16 + digits.len()) as u8];
    sei.extend_from_slice(&SEI_UUID);
    sei.extend_from_slice(digits.as_bytes());
    sei.push(0x80); // rbsp trailing bits
    let (header, len) = if keyframe {
        (0x65, KEY_BYTES) // IDR slice
    } else {
        (0x41, DELTA_BYTES) // non-IDR slice
    };
    let mut slice = vec![0xaa; len];
    slice[0] = header;
    let mut out = Vec::with_capacity(sei.len() + slice.len() + 8);
    for nal in [&sei, &slice] {
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

/// An error's description with what was being done.
fn fail<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> Error + '_ {
    move |err| format!("{what}: {err:?}")
}

/// Publishes `app/key` over RTMP for `duration`, every frame stamped at the moment it is sent.
pub(crate) fn publish(
    addr: SocketAddr,
    app: &str,
    key: &str,
    duration: Duration,
) -> Result<(), Error> {
    let mut tcp = TcpStream::connect(addr).map_err(fail("connect"))?;
    tcp.set_nodelay(true).map_err(fail("nodelay"))?;
    let mut hs = Handshake::new(PeerType::Client);
    let c0c1 = hs
        .generate_outbound_p0_and_p1()
        .map_err(fail("handshake"))?;
    tcp.write_all(&c0c1).map_err(fail("write"))?;
    let mut buf = vec![0u8; 8192];
    let leftover = loop {
        let n = tcp.read(&mut buf).map_err(fail("read"))?;
        if n == 0 {
            return Err("server closed during the handshake".into());
        }
        match hs.process_bytes(&buf[..n]).map_err(fail("handshake"))? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                tcp.write_all(&response_bytes).map_err(fail("write"))?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                tcp.write_all(&response_bytes).map_err(fail("write"))?;
                break remaining_bytes;
            }
        }
    };
    let (mut session, results) =
        ClientSession::new(ClientSessionConfig::new()).map_err(fail("session"))?;
    let send = |tcp: &mut TcpStream, r: ClientSessionResult| -> Result<(), Error> {
        if let ClientSessionResult::OutboundResponse(p) = r {
            tcp.write_all(&p.bytes).map_err(fail("write"))?;
        }
        Ok(())
    };
    for r in results {
        send(&mut tcp, r)?;
    }
    // Feeds the server's bytes to the session until `want` is raised.
    let mut wait_for = |tcp: &mut TcpStream,
                        session: &mut ClientSession,
                        mut input: Vec<u8>,
                        want: &ClientSessionEvent|
     -> Result<(), Error> {
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(fail("timeout"))?;
        loop {
            // Every packet the session produced must go out, even after the event: its chunk
            // headers are compressed against the ones before.
            let mut seen = false;
            for r in session.handle_input(&input).map_err(fail("session"))? {
                match r {
                    ClientSessionResult::RaisedEvent(ev) => seen |= &ev == want,
                    ClientSessionResult::OutboundResponse(p) => {
                        tcp.write_all(&p.bytes).map_err(fail("write"))?;
                    }
                    ClientSessionResult::UnhandleableMessageReceived(_) => {}
                }
            }
            if seen {
                return Ok(());
            }
            let n = tcp.read(&mut buf).map_err(fail("read"))?;
            if n == 0 {
                return Err(format!("server closed before {want:?}"));
            }
            input = buf[..n].to_vec();
        }
    };
    let r = session
        .request_connection(app.into())
        .map_err(fail("connect"))?;
    send(&mut tcp, r)?;
    wait_for(
        &mut tcp,
        &mut session,
        leftover,
        &ClientSessionEvent::ConnectionRequestAccepted,
    )?;
    let r = session
        .request_publishing(key.into(), PublishRequestType::Live)
        .map_err(fail("publish"))?;
    send(&mut tcp, r)?;
    wait_for(
        &mut tcp,
        &mut session,
        Vec::new(),
        &ClientSessionEvent::PublishRequestAccepted,
    )?;
    // From here the server only sends acknowledgements: drain them on another thread so its
    // socket buffer never fills.
    let mut drain = tcp.try_clone().map_err(fail("clone"))?;
    drain.set_read_timeout(None).map_err(fail("timeout"))?;
    std::thread::spawn(move || {
        let mut b = [0u8; 4096];
        while drain.read(&mut b).is_ok_and(|n| n > 0) {}
    });
    let video = |session: &mut ClientSession, body: Vec<u8>, ts_ms: u32| {
        session
            .publish_video_data(Bytes::from(body), RtmpTimestamp::new(ts_ms), false)
            .map_err(fail("video"))
    };
    // FLV AVC sequence header: frame type 1, codec 7, packet type 0, composition time 0.
    let mut header = vec![0x17, 0, 0, 0, 0];
    header.extend_from_slice(&AVCC_360P);
    let r = video(&mut session, header, 0)?;
    send(&mut tcp, r)?;
    let start = Instant::now();
    let frame_time = Duration::from_secs(1) / FPS;
    let mut i: u32 = 0;
    while start.elapsed() < duration {
        let due = start + frame_time * i;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let keyframe = i.is_multiple_of(FPS);
        let mut body = vec![if keyframe { 0x17 } else { 0x27 }, 1, 0, 0, 0];
        body.extend(frame_nals(keyframe, wall_us()));
        let r = video(&mut session, body, i * 1000 / FPS)?;
        send(&mut tcp, r)?;
        i += 1;
    }
    Ok(())
}

/// A plain HTTP/1.1 GET on a fresh connection: (status, body, when the last byte arrived in
/// µs since the epoch). Written out rather than pulling an HTTP client into the workspace for
/// one benchmark; onair's server always answers with a Content-Length.
async fn get(port: u16, path: &str) -> Result<(u16, Vec<u8>, u64), Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|x| format!("connect: {x}"))?;
    let _ = tcp.set_nodelay(true);
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes())
        .await
        .map_err(|x| format!("write: {x}"))?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw)
        .await
        .map_err(|x| format!("read: {x}"))?;
    let at = wall_us();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    Ok((status, raw[split + 4..].to_vec(), at))
}

/// The playlist's PRELOAD-HINT part URI and its (msn, part).
fn hint(playlist: &str) -> Option<(String, u64, u64)> {
    let line = playlist
        .lines()
        .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT:TYPE=PART"))?;
    let uri = line.split("URI=\"").nth(1)?.split('"').next()?;
    let (_, numbers) = uri.strip_suffix(".m4s")?.split_once('-')?;
    let (msn, part) = numbers.split_once('.')?;
    Some((uri.to_owned(), msn.parse().ok()?, part.parse().ok()?))
}

/// The SEI times (µs) in a part's bytes, in order.
pub(crate) fn stamps(data: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = data[at..].windows(16).position(|w| w == SEI_UUID) {
        let start = at + i + 16;
        if let Some(t) = data
            .get(start..start + 16)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|s| s.parse().ok())
        {
            out.push(t);
        }
        at = start;
    }
    out
}

/// What the client saw, times in milliseconds.
pub(crate) struct Measured {
    /// Every frame's latency.
    pub(crate) all: Vec<f64>,
    /// The latency of each part's first frame (it waited for the whole part).
    first: Vec<f64>,
    /// For each hinted part that never came: how long until the 404.
    missed: Vec<f64>,
    parts: u64,
}

/// Follows the live edge of `stream` for `secs`.
pub(crate) fn measure(port: u16, stream: &str, secs: Duration) -> Result<Measured, Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|x| x.to_string())?;
    rt.block_on(async {
        let dir = format!("/hls/{stream}");
        // The first playlist is held until a segment exists; the publisher needs a moment.
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut playlist = loop {
            match get(port, &format!("{dir}/media.m3u8")).await {
                Ok((200, body, _)) => break String::from_utf8_lossy(&body).into_owned(),
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Ok((status, body, _)) => {
                    return Err(format!(
                        "media.m3u8: {status} {}",
                        String::from_utf8_lossy(&body)
                    ));
                }
                Err(e) => return Err(e),
            }
        };
        let (mut all, mut first, mut missed, mut parts) = (Vec::new(), Vec::new(), Vec::new(), 0);
        let end = Instant::now() + secs;
        while Instant::now() < end {
            let (uri, msn, part) = hint(&playlist).ok_or("no PRELOAD-HINT in the playlist")?;
            let blocking = format!("{dir}/media.m3u8?_HLS_msn={msn}&_HLS_part={part}");
            let part_path = format!("{dir}/{uri}");
            let asked = wall_us();
            let (pl, got) = tokio::join!(get(port, &blocking), get(port, &part_path));
            let (status, body, _) = pl?;
            if status != 200 {
                return Err(format!("blocking playlist: {status}"));
            }
            playlist = String::from_utf8_lossy(&body).into_owned();
            let (status, data, at) = got?;
            // 404: the hinted part never came (a keyframe started the next segment instead).
            if status == 404 {
                missed.push(at.saturating_sub(asked) as f64 / 1000.0);
            } else if status == 200 {
                parts += 1;
                let ts = stamps(&data);
                for (i, t) in ts.iter().enumerate() {
                    let ms = at.saturating_sub(*t) as f64 / 1000.0;
                    all.push(ms);
                    if i == 0 {
                        first.push(ms);
                    }
                }
            }
        }
        Ok(Measured {
            all,
            first,
            missed,
            parts,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_found_again_in_the_bytes() {
        let mut data = b"moof...mdat".to_vec();
        data.extend(frame_nals(true, 1_795_000_000_123_456));
        data.extend(frame_nals(false, 1_795_000_000_156_789));
        assert_eq!(
            stamps(&data),
            vec![1_795_000_000_123_456, 1_795_000_000_156_789]
        );
        assert_eq!(
            hint("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"ab12-7.3.m4s\"\n"),
            Some(("ab12-7.3.m4s".into(), 7, 3))
        );
    }
}
