//! LL-HLS over HTTP: every hub stream is packaged by an `hls::Segmenter` as it is published,
//! and served at `/hls/NAME/index.m3u8` (multivariant), `media.m3u8` (the LL-HLS media
//! playlist, with blocking reload and delta updates), the init segment, segments and parts.
//!
//! A simulcast source (a WebRTC publisher sending several layers) gives one variant per layer:
//! the main one (`media.m3u8`, the highest layer being sent) and one per lower layer
//! (`media-lN.m3u8`), each with its own segmenter and its own file names, and every media
//! playlist carries EXT-X-RENDITION-REPORTs of the others. No transcoding: the layers are what
//! the publisher encoded.
//!
//! A segmenter task per stream reads the hub like any viewer; HTTP handlers only lock the
//! stream's state to copy out bytes or render a playlist. Blocking requests wait on a version
//! counter the task bumps whenever a part is added, so an answer leaves the moment its part
//! exists, and never waits longer than `hls.max_block_ms`.

pub mod aac;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use hls::playlist::{self, MediaOptions};
use hls::{Query, Readiness, Segmenter, SegmenterConfig};
use hub::{Hub, HubEvent, Item, Protocol, StreamName};
use serde::Serialize;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::access::{self, Access, StreamAction};
use crate::config::Config;
use crate::hls::aac::AacFromOpus;

/// How long an ended stream's playlist (with EXT-X-ENDLIST) stays available.
const LINGER: Duration = Duration::from_secs(60);

/// Every stream's packaging.
pub struct HlsServer {
    streams: Mutex<HashMap<String, Arc<HlsStream>>>,
    config: SegmenterConfig,
    max_block: Duration,
    /// `hls.aac_from_opus`.
    aac_from_opus: bool,
    /// Told of every request, so that a room member's stream that someone plays keeps all its
    /// simulcast layers (the SFU's dynacast).
    hub: Hub,
}

struct HlsStream {
    /// Changes with every publish: part of every file name, so URLs name immutable bytes.
    sid: String,
    state: Mutex<StreamState>,
    /// Bumped whenever a part is added or the stream ends.
    version: watch::Sender<u64>,
}

struct StreamState {
    /// The main variant first, then one per lower simulcast layer, highest first.
    variants: Vec<Variant>,
    ended: bool,
    /// The hub's track list, last described.
    tracks: Arc<[hub::TrackInfo]>,
}

struct Variant {
    /// `None`: the stream's main video; `Some(n)`: simulcast layer n alone.
    layer: Option<u8>,
    seg: Segmenter,
    /// Why it cannot be packaged ("HLS unavailable: VP8"); for the main variant, the stream.
    error: Option<String>,
    /// When its video last had a frame: a layer the publisher paused (a browser does under
    /// congestion) stops being offered.
    last_video: Option<Instant>,
}

impl Variant {
    /// The prefix of its file names: the publish's id, and the layer.
    fn sid(&self, stream_sid: &str) -> String {
        match self.layer {
            None => stream_sid.to_owned(),
            Some(n) => format!("{stream_sid}l{n}"),
        }
    }

    /// Its media playlist's file name.
    fn playlist(&self) -> String {
        match self.layer {
            None => "media.m3u8".to_owned(),
            Some(n) => format!("media-l{n}.m3u8"),
        }
    }

    /// Whether players are told of it: packaged, with a complete segment, and (a layer) still
    /// being sent.
    fn offered(&self) -> bool {
        let sending = self.layer.is_none()
            || self.last_video.is_some_and(|t| {
                t.elapsed()
                    < 2 * self
                        .seg
                        .config()
                        .target_duration
                        .max(Duration::from_secs(1))
            });
        self.error.is_none() && self.seg.has_segment() && sending
    }
}

impl StreamState {
    fn main(&self) -> &Variant {
        &self.variants[0]
    }

    fn variant(&self, layer: Option<u8>) -> Option<&Variant> {
        self.variants.iter().find(|v| v.layer == layer)
    }

    fn seg(&self, layer: Option<u8>) -> Option<&Segmenter> {
        self.variant(layer).map(|v| &v.seg)
    }

    /// Variants are never removed once made: one that `serve` found is there.
    fn variant_or_main(&self, layer: Option<u8>) -> &Variant {
        self.variant(layer).unwrap_or(self.main())
    }

    /// EXT-X-RENDITION-REPORTs for the media playlist of `layer`: every other variant offered.
    fn reports(&self, layer: Option<u8>) -> Vec<playlist::RenditionReport> {
        self.variants
            .iter()
            .filter(|v| v.layer != layer && v.offered())
            .filter_map(|v| playlist::RenditionReport::of(&v.seg, &v.playlist()))
            .collect()
    }
}

impl HlsStream {
    fn lock(&self) -> MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `f` gives an answer, the stream ends, or `deadline`.
    async fn wait_for<R>(
        &self,
        deadline: tokio::time::Instant,
        f: impl Fn(&StreamState) -> Option<R>,
    ) -> Option<R> {
        let mut rx = self.version.subscribe();
        loop {
            {
                let st = self.lock();
                if let Some(r) = f(&st) {
                    return Some(r);
                }
                if st.ended {
                    return None;
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }
}

/// Starts packaging every stream the hub gets. None when HLS is off.
pub fn start(config: &Config, hub: Hub) -> Option<Arc<HlsServer>> {
    if !config.hls.enabled {
        return None;
    }
    let server = Arc::new(HlsServer {
        streams: Mutex::new(HashMap::new()),
        config: config.segmenter(),
        max_block: Duration::from_millis(config.hls.max_block_ms),
        aac_from_opus: config.hls.aac_from_opus,
        hub: hub.clone(),
    });
    tokio::spawn(watch_hub(server.clone(), hub));
    Some(server)
}

impl HlsServer {
    fn streams(&self) -> MutexGuard<'_, HashMap<String, Arc<HlsStream>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, name: &str) -> Option<Arc<HlsStream>> {
        self.streams().get(name).cloned()
    }
}

async fn watch_hub(server: Arc<HlsServer>, hub: Hub) {
    let mut events = hub.events();
    loop {
        match events.recv().await {
            Ok(HubEvent::Started(name, _)) => {
                tokio::spawn(package(server.clone(), hub.clone(), name));
            }
            Ok(HubEvent::Ended(_)) => {} // the packaging task sees its reader end
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                warn!("HLS missed {n} hub events; streams started meanwhile are not packaged");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Reads one stream from the hub into its segmenter until the stream ends.
async fn package(server: Arc<HlsServer>, hub: Hub, name: StreamName) {
    let Some(mut reader) = hub.subscribe(&name, Protocol::Hls) else {
        return;
    };
    let key = name.to_string();
    let stream = Arc::new(HlsStream {
        sid: format!("{:08x}", fastrand::u32(..)),
        state: Mutex::new(StreamState {
            variants: vec![Variant {
                layer: None,
                seg: Segmenter::new(server.config),
                error: None,
                last_video: None,
            }],
            ended: false,
            tracks: Arc::from(Vec::new()),
        }),
        version: watch::channel(0).0,
    });
    server.streams().insert(key.clone(), stream.clone());
    debug!(stream = %key, sid = stream.sid, "HLS packaging");
    let mut aac = server.aac_from_opus.then(AacFromOpus::default);
    while let Some(item) = reader.recv().await {
        let items = match &mut aac {
            Some(stage) => stage.map(item),
            None => vec![item],
        };
        for item in items {
            let added = take(&stream, &key, &item, server.config);
            // Segments end at keyframes; a WebRTC encoder makes one only when asked.
            let now = Instant::now();
            // The main variant's schedule asks for keyframes, which the SFU asks of every
            // layer at once; the layer variants cut at those (they cut at half the target, so
            // a keyframe round finds them due), and ask only while they wait to start. One
            // keyframe per layer per segment, and the variants' segments line up.
            let mut due = false;
            for v in &mut stream.lock().variants {
                if v.layer.is_none() || v.seg.waiting_for_keyframe() {
                    due |= v.seg.keyframe_request(now);
                }
            }
            if due {
                reader.request_keyframe();
            }
            if added {
                stream.version.send_modify(|v| *v += 1);
            }
        }
    }
    {
        let mut st = stream.lock();
        for v in &mut st.variants {
            if let Err(e) = v.seg.finish() {
                debug!(stream = %key, "HLS finish: {e}");
            }
        }
        st.ended = true;
    }
    stream.version.send_modify(|v| *v += 1);
    tokio::time::sleep(LINGER).await;
    let mut streams = server.streams();
    if streams.get(&key).is_some_and(|s| Arc::ptr_eq(s, &stream)) {
        streams.remove(&key);
    }
}

/// Hands one item to the stream's segmenters; true when a part was added.
fn take(stream: &HlsStream, key: &str, item: &Item, config: SegmenterConfig) -> bool {
    let mut st = stream.lock();
    // A simulcast layer carried on its own (hub track with `layer`) is a variant.
    if let Item::Tracks(tracks) = item {
        st.tracks = tracks.clone();
        for layer in tracks.iter().filter_map(|t| t.layer) {
            if st.variant(Some(layer)).is_none() {
                debug!(stream = %key, layer, "HLS variant for a simulcast layer");
                st.variants.push(Variant {
                    layer: Some(layer),
                    seg: Segmenter::new(SegmenterConfig {
                        layer: Some(layer),
                        target_duration: config.target_duration / 2,
                        ..config
                    }),
                    error: None,
                    last_video: None,
                });
                st.variants[1..].sort_by_key(|v| std::cmp::Reverse(v.layer));
            }
        }
    }
    // Whose video a frame is: (a video frame, its layer).
    let video_of = match item {
        Item::Frame(f) => st
            .tracks
            .get(f.track)
            .filter(|t| t.kind() == hub::MediaKind::Video)
            .map(|t| t.layer),
        Item::Tracks(_) => None,
    };
    let now = Instant::now();
    let mut added = false;
    for v in &mut st.variants {
        if video_of == Some(v.layer) {
            v.last_video = Some(now);
        }
        let parts_before = v.seg.segments().back().map(|s| (s.msn, s.parts.len()));
        let result = match item {
            Item::Tracks(tracks) => v.seg.set_tracks(tracks),
            Item::Frame(f) if v.error.is_none() => v.seg.push(f, SystemTime::now()),
            Item::Frame(_) => Ok(()),
        };
        match result {
            Ok(()) => {
                if matches!(item, Item::Tracks(_)) {
                    v.error = None;
                }
            }
            Err(e) => {
                if v.error.is_none() && v.layer.is_none() {
                    info!(stream = %key, "{e}");
                }
                v.error = Some(e.to_string());
            }
        }
        added |= parts_before != v.seg.segments().back().map(|s| (s.msn, s.parts.len()));
    }
    added
}

/// `/hls/…` and `/api/hls`. With `auth.keys` (and not `auth.open_playback`) every `/hls/`
/// request needs a token granting play of its stream, in the query (`?token=`): players
/// cannot add headers to the URIs a playlist names, so the playlists carry it on to every
/// URI they list (a CDN can still cache the media by path).
pub fn router(server: Arc<HlsServer>, access: Arc<Access>) -> Router {
    let list_routes = Router::new()
        .route("/api/hls", get(list))
        .with_state(server.clone());
    Router::new()
        .route("/hls/{*path}", get(serve))
        .with_state((server, access))
        .merge(list_routes)
}

#[derive(Serialize)]
struct StreamStatus {
    name: String,
    /// "live", "ended", "waiting" (no keyframe yet) or "unavailable".
    state: &'static str,
    error: Option<String>,
    url: String,
    segments: usize,
    /// Renditions offered: one, or one per simulcast layer.
    variants: usize,
}

/// `GET /api/hls`: every packaged stream, and why one cannot be.
async fn list(State(server): State<Arc<HlsServer>>) -> Response {
    let streams: Vec<(String, Arc<HlsStream>)> = server
        .streams()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut out: Vec<StreamStatus> = streams
        .into_iter()
        .map(|(name, s)| {
            let st = s.lock();
            let main = st.main();
            let segments = main
                .seg
                .segments()
                .iter()
                .filter(|s| s.data.is_some())
                .count();
            StreamStatus {
                url: format!("/hls/{name}/index.m3u8"),
                name,
                state: if main.error.is_some() {
                    "unavailable"
                } else if st.ended {
                    "ended"
                } else if main.seg.segments().is_empty() {
                    "waiting"
                } else {
                    "live"
                },
                error: main.error.clone(),
                segments,
                variants: st.variants.iter().filter(|v| v.offered()).count().max(1),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    with_cors(axum::Json(out).into_response())
}

fn with_cors(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

fn error(code: StatusCode, why: impl Into<String>) -> Response {
    let mut body = why.into();
    body.push('\n');
    with_cors(
        (
            code,
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            body,
        )
            .into_response(),
    )
}

/// Immutable bytes (init, segment, part): cacheable for a year.
fn media(bytes: Bytes) -> Response {
    with_cors(
        (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("video/mp4")),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
            ],
            bytes,
        )
            .into_response(),
    )
}

fn m3u8(text: String, max_age: &'static str) -> Response {
    with_cors(
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/vnd.apple.mpegurl"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static(max_age)),
            ],
            text,
        )
            .into_response(),
    )
}

/// What a file name inside `/hls/NAME/` asks for.
#[derive(Debug, PartialEq, Eq)]
enum File {
    Multivariant,
    Media,
    Init(u32),
    Segment(u64),
    Part(u64, usize),
}

/// The file a name asks for, and of which variant (`None`: the main one; `Some(n)`: simulcast
/// layer n, whose names are `media-lN.m3u8` and `SIDlN-…`).
fn parse_file(file: &str, sid: &str) -> Option<(Option<u8>, File)> {
    match file {
        "index.m3u8" => return Some((None, File::Multivariant)),
        "media.m3u8" => return Some((None, File::Media)),
        _ => {}
    }
    if let Some(n) = file
        .strip_prefix("media-l")
        .and_then(|r| r.strip_suffix(".m3u8"))
    {
        return Some((Some(layer_number(n)?), File::Media));
    }
    let rest = file.strip_prefix(sid)?;
    let (layer, rest) = match rest.strip_prefix('l') {
        Some(r) => {
            let (n, r) = r.split_once('-')?;
            (Some(layer_number(n)?), r)
        }
        None => (None, rest.strip_prefix('-')?),
    };
    if let Some(n) = rest
        .strip_prefix("init")
        .and_then(|r| r.strip_suffix(".mp4"))
    {
        return n.parse().ok().map(|n| (layer, File::Init(n)));
    }
    let stem = rest.strip_suffix(".m4s")?;
    let file = match stem.split_once('.') {
        Some((msn, part)) => File::Part(msn.parse().ok()?, part.parse().ok()?),
        None => File::Segment(stem.parse().ok()?),
    };
    Some((layer, file))
}

/// A layer number as written in file names: digits only (`u8::from_str` takes a `+`).
fn layer_number(n: &str) -> Option<u8> {
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// `GET /hls/NAME/FILE`.
async fn serve(
    State((server, access)): State<(Arc<HlsServer>, Arc<Access>)>,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some((name, file)) = path.rsplit_once('/') else {
        return error(StatusCode::NOT_FOUND, "expected /hls/NAME/FILE");
    };
    // Names are hub names (letters, digits, `-_.`, `/`-separated): no `..`, no traversal,
    // and nothing here touches the filesystem anyway.
    let Ok(name) = StreamName::parse(name) else {
        return error(StatusCode::BAD_REQUEST, "not a stream name");
    };
    // Checked before anything else is told, even whether the stream is live.
    let token = access::query_token(query.as_deref());
    if let Err(d) = access.check_stream(token, name.as_str(), StreamAction::Play) {
        return d.into_response();
    }
    // The query every URI in the playlists carries on: only a token that verified (so it is
    // base64url and dots, nothing a quoted attribute must escape).
    let uri_query = token
        .filter(|_| access.needs_play_token())
        .map(|t| format!("token={t}"));
    let uri_query = uri_query.as_deref();
    // A playlist naming a viewer's token is that viewer's: no shared cache may keep it.
    let (short, long) = match uri_query {
        Some(_) => ("private, max-age=1", "private, max-age=60"),
        None => ("public, max-age=1", "public, max-age=60"),
    };
    let Some(stream) = server.get(&name.to_string()) else {
        return error(StatusCode::NOT_FOUND, format!("stream {name} is not live"));
    };
    server.hub.note_viewed(&name);
    let Some((layer, file)) = parse_file(file, &stream.sid) else {
        return error(
            StatusCode::NOT_FOUND,
            "no such file (a URL from an earlier publish?)",
        );
    };
    {
        let st = stream.lock();
        if let Some(e) = st.main().error.clone() {
            return error(StatusCode::CONFLICT, e);
        }
        if st.variant(layer).is_none_or(|v| v.error.is_some()) {
            return error(StatusCode::NOT_FOUND, "no such rendition");
        }
    }
    let deadline = tokio::time::Instant::now() + server.max_block;
    match file {
        File::Multivariant => {
            // The first segment tells the codecs and the bitrate, and players start on a
            // complete one: wait for it.
            let text = stream
                .wait_for(deadline, |st| {
                    st.main().seg.has_segment().then(|| {
                        let offered: Vec<(&Segmenter, String)> = st
                            .variants
                            .iter()
                            .filter(|v| v.offered())
                            .map(|v| (&v.seg, with_query(v.playlist(), uri_query)))
                            .collect();
                        let list: Vec<(&Segmenter, &str)> =
                            offered.iter().map(|(s, u)| (*s, u.as_str())).collect();
                        playlist::multivariant(&list)
                    })
                })
                .await;
            match text {
                Some(t) => m3u8(t, short),
                None => error(StatusCode::SERVICE_UNAVAILABLE, "no media yet"),
            }
        }
        File::Media => {
            let opts = PlaylistAnswer {
                uri_query,
                short,
                long,
            };
            media_playlist(&stream, layer, query.as_deref(), deadline, opts).await
        }
        File::Init(id) => match stream.lock().seg(layer).and_then(|s| s.init_by_id(id)) {
            Some(b) => media(b.clone()),
            None => error(StatusCode::NOT_FOUND, "no such init segment"),
        },
        File::Segment(msn) => {
            // Only the segment being built is worth waiting for; any other exists or never
            // will.
            let (exists, building) = {
                let st = stream.lock();
                let seg = st
                    .seg(layer)
                    .and_then(|g| g.segments().iter().find(|s| s.msn == msn));
                (
                    seg.is_some_and(|s| s.data.is_some()),
                    seg.is_some_and(|s| s.data.is_none()),
                )
            };
            if !exists && !building {
                return error(StatusCode::NOT_FOUND, "no such segment");
            }
            let data = stream
                .wait_for(deadline, |st| {
                    let s = st.seg(layer)?.segments().iter().find(|s| s.msn == msn);
                    s.and_then(|s| s.data.clone())
                })
                .await;
            data.map_or_else(|| error(StatusCode::NOT_FOUND, "no such segment"), media)
        }
        File::Part(msn, i) => {
            // A preload hint names the next part before it exists: hold a request for it until
            // it does (RFC 8216bis §6.2.6). Any other part exists now or never will.
            let (exists, next) = {
                let st = stream.lock();
                let Some(g) = st.seg(layer) else {
                    return error(StatusCode::NOT_FOUND, "no such rendition");
                };
                let seg = g.segments().iter().find(|s| s.msn == msn);
                (seg.is_some_and(|s| s.parts.len() > i), g.next_part())
            };
            let upcoming = next.is_none_or(|(n, p)| (msn, i) == (n, p) || (msn, i) == (n + 1, 0));
            if !exists && !upcoming {
                return error(StatusCode::NOT_FOUND, "no such part");
            }
            // A hint can name a part that never comes: the keyframe that closes its segment
            // starts the next one instead. Answer that at once, not after `max_block`.
            let data = stream
                .wait_for(deadline, |st| {
                    let segments = st.seg(layer)?.segments();
                    match segments.iter().find(|s| s.msn == msn) {
                        Some(s) => match s.parts.get(i) {
                            Some(p) => Some(Some(p.data.clone())),
                            None => s.data.is_some().then_some(None),
                        },
                        None => segments.back().is_some_and(|l| l.msn > msn).then_some(None),
                    }
                })
                .await
                .flatten();
            data.map_or_else(|| error(StatusCode::NOT_FOUND, "no such part"), media)
        }
    }
}

/// `uri` with `?query`, when there is one.
fn with_query(uri: String, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{uri}?{q}"),
        None => uri,
    }
}

/// How a media playlist is answered: the query its URIs carry, and its Cache-Control when
/// it is the live edge (`short`) or an answered blocking request (`long`).
struct PlaylistAnswer<'a> {
    uri_query: Option<&'a str>,
    short: &'static str,
    long: &'static str,
}

/// A variant's media playlist (`layer` as in [`parse_file`]), answering blocking requests.
async fn media_playlist(
    stream: &HlsStream,
    layer: Option<u8>,
    query: Option<&str>,
    deadline: tokio::time::Instant,
    answer: PlaylistAnswer<'_>,
) -> Response {
    let q = match Query::parse(query) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    // Variants are never removed once made, and `serve` found this one.
    let render = |st: &StreamState| {
        let v = st.variant_or_main(layer);
        playlist::media(
            &v.seg,
            &v.sid(&stream.sid),
            MediaOptions {
                skip: q.skip,
                ended: st.ended,
                uri_query: answer.uri_query,
            },
            &st.reports(layer),
        )
    };
    let Some(msn) = q.msn else {
        let text = stream
            .wait_for(deadline, |st| {
                st.variant_or_main(layer)
                    .seg
                    .has_segment()
                    .then(|| render(st))
            })
            .await;
        return match text {
            Some(t) => m3u8(t, answer.short),
            None => error(StatusCode::SERVICE_UNAVAILABLE, "no media yet"),
        };
    };
    if stream
        .lock()
        .variant_or_main(layer)
        .seg
        .readiness(msn, q.part)
        == Readiness::TooFar
    {
        return error(
            StatusCode::BAD_REQUEST,
            "_HLS_msn is more than two segments ahead of the playlist",
        );
    }
    let text = stream
        .wait_for(deadline, |st| {
            (st.variant_or_main(layer).seg.readiness(msn, q.part) == Readiness::Ready || st.ended)
                .then(|| render(st))
        })
        .await;
    // An answered blocking request names one moment of the stream: a CDN may keep it.
    match text {
        Some(t) => m3u8(t, answer.long),
        None => {
            let st = stream.lock();
            if st.ended {
                m3u8(render(&st), answer.short)
            } else {
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the part asked for did not appear in time",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_parse_only_with_this_publishs_id() {
        let main = |f| Some((None, f));
        assert_eq!(parse_file("index.m3u8", "ab"), main(File::Multivariant));
        assert_eq!(parse_file("media.m3u8", "ab"), main(File::Media));
        assert_eq!(parse_file("ab-init3.mp4", "ab"), main(File::Init(3)));
        assert_eq!(parse_file("ab-12.m4s", "ab"), main(File::Segment(12)));
        assert_eq!(parse_file("ab-12.4.m4s", "ab"), main(File::Part(12, 4)));
        assert_eq!(parse_file("cd-12.m4s", "ab"), None);
        assert_eq!(parse_file("ab-12.x.m4s", "ab"), None);
        assert_eq!(parse_file("ab-../../etc/passwd", "ab"), None);
        assert_eq!(parse_file("ab-99999999999999999999999.m4s", "ab"), None);
        // A simulcast layer's variant.
        let l1 = |f| Some((Some(1), f));
        assert_eq!(parse_file("media-l1.m3u8", "ab"), l1(File::Media));
        assert_eq!(parse_file("abl1-init0.mp4", "ab"), l1(File::Init(0)));
        assert_eq!(parse_file("abl1-7.2.m4s", "ab"), l1(File::Part(7, 2)));
        assert_eq!(parse_file("abl1-7.m4s", "ab"), l1(File::Segment(7)));
        for bad in [
            "media-l.m3u8",
            "media-l+1.m3u8",
            "media-l256.m3u8",
            "abl-7.m4s",
            "abl+1-7.m4s",
            "abl1x-7.m4s",
            "abl999-7.m4s",
        ] {
            assert_eq!(parse_file(bad, "ab"), None, "{bad}");
        }
    }
}
