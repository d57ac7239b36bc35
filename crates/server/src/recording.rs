//! Server-side recording: streams whose names match `recording.streams`, and streams or rooms
//! named through the API, are written to `recording.dir` as fragmented MP4, the same CMAF
//! fragments LL-HLS serves.
//!
//! A stream becomes one file with its video and audio. A room becomes one file per participant
//! track (`ROOM_NAME-STAMP-video.mp4`, `…-audio.mp4`) and a JSON manifest saying when each
//! file starts and ends on the room recording's clock, so they can be laid out or mixed later.
//!
//! Each fragment is appended as soon as it is cut (one a second), after an init segment at the
//! start of the file, so a file is playable up to its last whole fragment even if onair is
//! killed mid-recording. A track change (new codec parameters) starts a new file. Writing runs
//! on its own task behind a bounded queue: a slow or full disk loses recording data and says
//! so (log, `/api/recordings`), never the live stream.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use hls::{Segmenter, SegmenterConfig};
use hub::{Hub, HubEvent, Item, MediaKind, Protocol, StreamName};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::config::Config;

/// Fragments waiting to be written per recording; beyond this the disk is too slow and the
/// recording stops with an error rather than hold memory.
const QUEUE: usize = 64;

/// The recorder and what it has recorded.
pub struct Recorder {
    dir: PathBuf,
    patterns: Vec<String>,
    hub: Hub,
    seg: SegmenterConfig,
    /// Active and ended recordings' status, by file name.
    status: Mutex<HashMap<String, RecordingStatus>>,
    /// Stream recordings running, by stream name: `true` stops one. The id tells a
    /// recording from a later one of the same stream.
    active: Mutex<HashMap<String, (u64, watch::Sender<bool>)>>,
    /// Room recordings running, by room.
    rooms: Mutex<HashMap<String, Arc<RoomRecording>>>,
    next_id: std::sync::atomic::AtomicU64,
    /// `recording.max_active`: recordings the API may have running at once (streams and
    /// rooms together).
    max_active: usize,
    /// Bytes in `dir` (counted at startup and at each API start, then added to as written),
    /// and `recording.max_dir_gb` of them allowed: past it recordings stop, failed.
    dir_bytes: std::sync::atomic::AtomicU64,
    max_dir_bytes: u64,
    /// Told of each recording that finishes (`recording_finished`).
    hooks: crate::webhooks::Webhooks,
}

/// The bytes of the regular files in `dir` (not below it: recordings are written flat).
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(std::fs::Metadata::is_file)
            .map(|m| m.len())
            .sum()
    })
}

/// A room being recorded: every member's tracks, each to its own file, and the manifest.
struct RoomRecording {
    room: String,
    /// The manifest's file name.
    manifest: String,
    started: SystemTime,
    stop: watch::Sender<bool>,
    state: Mutex<Manifest>,
    /// Held while the manifest is written: one writer at a time, each with the latest state.
    writing: tokio::sync::Mutex<()>,
    /// `STREAM#kind` of the jobs running, so a member is never recorded twice (the API and
    /// the hub's start event can both see a member that starts as the recording does).
    jobs: Mutex<std::collections::HashSet<String>>,
}

/// The JSON file beside a room's track files.
#[derive(Debug, Clone, Serialize)]
struct Manifest {
    room: String,
    /// Milliseconds since 1970 when the room recording started; every `start_ms`/`end_ms` is
    /// relative to it.
    started_unix_ms: u64,
    stopped_unix_ms: Option<u64>,
    tracks: Vec<ManifestTrack>,
}

#[derive(Debug, Clone, Serialize)]
struct ManifestTrack {
    participant: String,
    stream: String,
    kind: MediaKind,
    codec: &'static str,
    file: String,
    /// When the file's first sample arrived (wall clock), after the room recording started.
    start_ms: i64,
    /// When the file ended; `null` while it is being written.
    end_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordingStatus {
    /// File name inside `recording.dir`.
    pub file: String,
    pub stream: String,
    /// "recording", "done" or "failed".
    pub state: &'static str,
    pub bytes: u64,
    /// Media written to it so far, milliseconds (absent for files found on disk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    /// Seconds since 1970 when it started.
    pub started: u64,
    /// The room recording it belongs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The one kind of track in it (room recordings); absent when it holds video and audio.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<MediaKind>,
}

impl Recorder {
    fn status(&self) -> MutexGuard<'_, HashMap<String, RecordingStatus>> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn active(&self) -> MutexGuard<'_, HashMap<String, (u64, watch::Sender<bool>)>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<String, Arc<RoomRecording>>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts recording stream `name` to one file; false when it is being recorded already.
    /// `from_now`: begin at the next keyframe rather than the frames the hub kept.
    fn start_stream(self: &Arc<Self>, name: StreamName, from_now: bool) -> bool {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = watch::channel(false);
        {
            let mut active = self.active();
            if active.contains_key(&name.to_string()) {
                return false;
            }
            active.insert(name.to_string(), (id, tx));
        }
        let job = Job {
            name,
            only: None,
            room: None,
            stop: rx,
            id: Some(id),
            from_now,
        };
        tokio::spawn(record(self.clone(), job));
        true
    }

    /// Starts recording one member's stream of a recorded room: a file per track kind.
    fn start_member(self: &Arc<Self>, room: &Arc<RoomRecording>, name: &StreamName) {
        for kind in [MediaKind::Video, MediaKind::Audio] {
            if !room.jobs().insert(job_key(name, kind)) {
                continue; // already being recorded
            }
            let job = Job {
                name: name.clone(),
                only: Some(kind),
                room: Some(room.clone()),
                stop: room.stop.subscribe(),
                id: None,
                from_now: true,
            };
            tokio::spawn(record(self.clone(), job));
        }
    }

    fn wanted(&self, name: &StreamName) -> bool {
        let name = name.to_string();
        self.patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => *p == name,
        })
    }
}

/// Starts recording matching streams. None when recording is off.
pub fn start(config: &Config, hub: Hub, hooks: crate::webhooks::Webhooks) -> Option<Arc<Recorder>> {
    let r = &config.recording;
    if !r.enabled {
        return None;
    }
    let dir = PathBuf::from(&r.dir);
    // A directory onair cannot make is reported, and each recording then fails with the
    // reason; the server and its live streams run on.
    if let Err(e) = std::fs::create_dir_all(&dir) {
        warn!("recording.dir {}: {e}; recordings will fail", dir.display());
    }
    let dir_for_size = dir.clone();
    let recorder = Arc::new(Recorder {
        dir,
        patterns: r.streams.clone(),
        hub: hub.clone(),
        seg: config.recording_segmenter(),
        status: Mutex::new(HashMap::new()),
        active: Mutex::new(HashMap::new()),
        rooms: Mutex::new(HashMap::new()),
        next_id: std::sync::atomic::AtomicU64::new(0),
        max_active: r.max_active,
        dir_bytes: std::sync::atomic::AtomicU64::new(dir_size(&dir_for_size)),
        max_dir_bytes: r.max_dir_gb.saturating_mul(1 << 30),
        hooks,
    });
    tokio::spawn(watch_hub(recorder.clone(), hub));
    Some(recorder)
}

/// The room a room member's stream (`ROOM/NAME`) belongs to.
fn room_of(name: &StreamName, source: Protocol) -> Option<String> {
    if source != Protocol::Room {
        return None;
    }
    name.to_string()
        .rsplit_once('/')
        .map(|(room, _)| room.to_owned())
}

async fn watch_hub(recorder: Arc<Recorder>, hub: Hub) {
    let mut events = hub.events();
    loop {
        match events.recv().await {
            Ok(HubEvent::Started(name, source)) => {
                if recorder.wanted(&name) {
                    recorder.start_stream(name.clone(), false);
                }
                let room = room_of(&name, source).and_then(|r| recorder.rooms().get(&r).cloned());
                if let Some(room) = room {
                    recorder.start_member(&room, &name);
                }
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                warn!("recording missed {n} hub events");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// A file name for `name` starting now: `live_show-20261123-231500.mp4`, with `suffix`
/// (`-video`) before the extension.
fn file_name(name: &StreamName, now: SystemTime, n: u32, suffix: &str) -> String {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let stamp = hls::playlist::compact_date(secs);
    let base = name.to_string().replace('/', "_");
    if n == 0 {
        format!("{base}-{stamp}{suffix}.mp4")
    } else {
        format!("{base}-{stamp}-{n}{suffix}.mp4")
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What one recording task records.
struct Job {
    name: StreamName,
    /// One kind of track (room recordings), or both.
    only: Option<MediaKind>,
    room: Option<Arc<RoomRecording>>,
    /// `true`: stop (the API asked).
    stop: watch::Receiver<bool>,
    /// Its entry in `Recorder::active` (stream recordings).
    id: Option<u64>,
    /// Start at the next keyframe, not with the frames the hub kept (API starts).
    from_now: bool,
}

/// Reads one stream and writes its fragments, until the stream ends or the job is stopped.
async fn record(recorder: Arc<Recorder>, mut job: Job) {
    let name = job.name.clone();
    let reader = recorder.hub.subscribe(&name, Protocol::Recording);
    if let Some(mut reader) = reader {
        if job.from_now {
            // Asked for now: not the GOP the hub kept, which from a WebRTC source can be
            // many seconds old (and would put the manifest's times off by that much).
            reader.start_from_now();
            reader.request_keyframe();
        }
        record_from(&recorder, &mut job, reader).await;
    }
    if let (Some(room), Some(kind)) = (&job.room, job.only) {
        room.jobs().remove(&job_key(&name, kind));
    }
    if let Some(id) = job.id {
        let mut active = recorder.active();
        if active.get(&name.to_string()).is_some_and(|(i, _)| *i == id) {
            active.remove(&name.to_string());
        }
    }
}

async fn record_from(recorder: &Arc<Recorder>, job: &mut Job, mut reader: hub::Reader) {
    let name = job.name.clone();
    let config = SegmenterConfig {
        only: job.only,
        ..recorder.seg
    };
    let suffix = match job.only {
        Some(MediaKind::Video) => "-video",
        Some(MediaKind::Audio) => "-audio",
        None => "",
    };
    let mut seg = Segmenter::new(config);
    let mut writer: Option<(u32, mpsc::Sender<Bytes>, String)> = None;
    let mut written = (0u64, 0usize); // (msn, parts) already handed to the writer
    let mut files = 0;
    // The codec of each kind last described: a file may open after its track has left the
    // hub's list (a member who leaves before the first segment is complete).
    let mut codecs: HashMap<MediaKind, &'static str> = HashMap::new();
    let mut warned = false;
    if *job.stop.borrow() {
        return;
    }
    // One more pass after the stream ends or the job is stopped: the segment being built is
    // closed and written (and its file opened, if the recording was that short).
    let mut ended = false;
    loop {
        if !ended {
            let item = tokio::select! {
                item = reader.recv() => item,
                // The API stopped it (or the room recording it belongs to went away).
                _ = job.stop.wait_for(|stop| *stop) => None,
            };
            match item {
                None => {
                    ended = true;
                    if let Err(e) = seg.finish() {
                        warn!(stream = %name, "recording finish: {e}");
                    }
                }
                Some(item) => {
                    if let Item::Tracks(t) = &item {
                        for info in t.iter() {
                            codecs.insert(info.kind(), info.codec.name());
                        }
                    }
                    let r = match &item {
                        Item::Tracks(t) => seg.set_tracks(t),
                        Item::Frame(f) => seg.push(f, SystemTime::now()),
                    };
                    if let Err(e) = r {
                        // Every frame would say it again.
                        if !warned || matches!(item, Item::Tracks(_)) {
                            warn!(stream = %name, "not recording: {e}");
                        }
                        warned = true;
                        continue;
                    }
                    // Fragments end at keyframes' segments too: ask a WebRTC source for them,
                    // as HLS does.
                    if seg.keyframe_request(std::time::Instant::now()) {
                        reader.request_keyframe();
                    }
                }
            }
        }
        // Hand every part cut since the last look to the file of its init segment. A new init
        // (first, or after a track change) starts a new file, once it has a complete segment:
        // a source's first moments can change its tracks again (a WebRTC publisher's audio
        // described before its video), and a file per such flicker helps nobody. (A change of
        // the same tracks, as a new picture size, closes the segment before it, so no frame is
        // lost: `keep_every_frame`.)
        let ready: Vec<u32> = seg
            .segments()
            .iter()
            .filter(|s| s.data.is_some())
            .map(|s| s.init)
            .collect();
        let mut failed = false;
        for s in seg.segments() {
            if s.msn < written.0 || !ready.contains(&s.init) {
                continue;
            }
            if writer.as_ref().is_none_or(|(id, _, _)| *id != s.init) {
                let Some(init) = seg.init_by_id(s.init).cloned() else {
                    continue;
                };
                let file = claim_file(recorder, job, &name, &mut files, suffix);
                let (tx, rx) = mpsc::channel(QUEUE);
                let path = recorder.dir.join(&file);
                info!(stream = %name, file, "recording");
                if let Some(room) = &job.room {
                    // The file before (a track change) ends where this one begins.
                    if let Some((_, _, old)) = &writer {
                        room.end_track(old, s.program_date_time);
                    }
                    let kind = job.only.unwrap_or(MediaKind::Video);
                    let codec = codecs.get(&kind).copied().unwrap_or("");
                    room.add_track(ManifestTrack {
                        participant: name.to_string().rsplit('/').next().unwrap_or("").to_owned(),
                        stream: name.to_string(),
                        kind,
                        codec,
                        file: file.clone(),
                        start_ms: room.offset_ms(s.program_date_time),
                        end_ms: None,
                    });
                    write_manifest(recorder, room).await;
                }
                tokio::spawn(write_file(recorder.clone(), path, file.clone(), rx));
                let _ = tx.try_send(init);
                writer = Some((s.init, tx, file));
                written = (s.msn, 0);
            }
            let Some((_, tx, file)) = writer.as_ref() else {
                break;
            };
            let from = if s.msn == written.0 { written.1 } else { 0 };
            let media_ms: f64 = s.parts.iter().skip(from).map(|p| p.duration * 1000.0).sum();
            if let Some(d) = recorder
                .status()
                .get_mut(file)
                .and_then(|st| st.duration_ms.as_mut())
            {
                *d += media_ms.round() as u64;
            }
            for p in s.parts.iter().skip(from) {
                let sent = if ended {
                    tx.send(p.data.clone()).await.is_ok()
                } else {
                    tx.try_send(p.data.clone()).is_ok()
                };
                if !sent {
                    fail(
                        recorder,
                        file,
                        "the disk is too slow: recording stopped".into(),
                    );
                    failed = true;
                    break;
                }
            }
            written = (s.msn, s.parts.len());
            if failed {
                break;
            }
        }
        if failed {
            break;
        }
        if ended {
            break;
        }
    }
    if let Some((_, _, file)) = writer.as_ref()
        && let Some(room) = &job.room
    {
        room.end_track(file, SystemTime::now());
        write_manifest(recorder, room).await;
    }
    // Dropping the sender lets the writer finish the file.
}

/// Chooses the next file name for a job and claims it. Never overwrite: a republish within
/// the same second gets the next number. The name is chosen and claimed under one lock, so two
/// recordings never pick the same.
fn claim_file(
    recorder: &Recorder,
    job: &Job,
    name: &StreamName,
    files: &mut u32,
    suffix: &str,
) -> String {
    let mut status = recorder.status();
    let mut file = file_name(name, SystemTime::now(), *files, suffix);
    while recorder.dir.join(&file).exists() || status.contains_key(&file) {
        *files += 1;
        file = file_name(name, SystemTime::now(), *files, suffix);
    }
    *files += 1;
    status.insert(
        file.clone(),
        RecordingStatus {
            file: file.clone(),
            stream: name.to_string(),
            state: "recording",
            bytes: 0,
            duration_ms: Some(0),
            error: None,
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            room: job.room.as_ref().map(|r| r.room.clone()),
            kind: job.only,
        },
    );
    file
}

/// A room job's key: the member's stream and the kind of track.
fn job_key(name: &StreamName, kind: MediaKind) -> String {
    format!("{name}#{kind:?}")
}

impl RoomRecording {
    fn jobs(&self) -> MutexGuard<'_, std::collections::HashSet<String>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Manifest> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Milliseconds from the room recording's start to `t`.
    fn offset_ms(&self, t: SystemTime) -> i64 {
        match t.duration_since(self.started) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => -(e.duration().as_millis() as i64),
        }
    }

    fn add_track(&self, track: ManifestTrack) {
        self.lock().tracks.push(track);
    }

    fn end_track(&self, file: &str, at: SystemTime) {
        let end = self.offset_ms(at);
        if let Some(t) = self.lock().tracks.iter_mut().find(|t| t.file == file) {
            t.end_ms.get_or_insert(end);
        }
    }
}

/// Rewrites a room's manifest: to a temporary file, then renamed over the old one, so a
/// reader never sees half a manifest.
async fn write_manifest(recorder: &Recorder, room: &RoomRecording) {
    let _writing = room.writing.lock().await;
    let json = match serde_json::to_vec_pretty(&*room.lock()) {
        Ok(j) => j,
        Err(e) => return warn!(room = room.room, "manifest: {e}"),
    };
    let path = recorder.dir.join(&room.manifest);
    let tmp = recorder.dir.join(format!(".{}.tmp", room.manifest));
    let result = async {
        tokio::fs::write(&tmp, &json).await?;
        tokio::fs::rename(&tmp, &path).await
    }
    .await;
    if let Err(e) = result {
        warn!(room = room.room, "writing {}: {e}", path.display());
    }
}

fn fail(recorder: &Recorder, file: &str, why: String) {
    let mut st = recorder.status();
    if let Some(s) = st.get_mut(file)
        && s.state != "failed"
    {
        warn!(file, "recording failed: {why}");
        s.state = "failed";
        s.error = Some(why);
        recorder.finished(s);
    }
}

/// Appends what arrives to `path`, flushing each fragment so a kill loses at most the one
/// being written; closes the file when the sender is dropped.
async fn write_file(
    recorder: Arc<Recorder>,
    path: PathBuf,
    file: String,
    rx: mpsc::Receiver<Bytes>,
) {
    // create_new: an existing file (another run's, or a name collision) is never truncated.
    let f = match tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .await
    {
        Ok(f) => f,
        Err(e) => {
            fail(
                &recorder,
                &file,
                format!("creating {}: {e}", path.display()),
            );
            return;
        }
    };
    write_chunks(recorder, &path, file, f, rx).await;
}

async fn write_chunks(
    recorder: Arc<Recorder>,
    path: &Path,
    file: String,
    mut f: tokio::fs::File,
    mut rx: mpsc::Receiver<Bytes>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    while let Some(chunk) = rx.recv().await {
        if recorder
            .status()
            .get(&file)
            .is_some_and(|s| s.state == "failed")
        {
            return;
        }
        let len = chunk.len() as u64;
        if recorder.dir_bytes.load(Relaxed).saturating_add(len) > recorder.max_dir_bytes {
            fail(
                &recorder,
                &file,
                format!(
                    "{} is full: recording.max_dir_gb ({} bytes) reached",
                    recorder.dir.display(),
                    recorder.max_dir_bytes
                ),
            );
            return;
        }
        if let Err(e) = async {
            f.write_all(&chunk).await?;
            f.flush().await
        }
        .await
        {
            fail(&recorder, &file, format!("writing {}: {e}", path.display()));
            return;
        }
        recorder.dir_bytes.fetch_add(len, Relaxed);
        if let Some(s) = recorder.status().get_mut(&file) {
            s.bytes += len;
        }
    }
    if let Err(e) = f.sync_all().await {
        fail(&recorder, &file, format!("closing {}: {e}", path.display()));
        return;
    }
    let mut st = recorder.status();
    if let Some(s) = st.get_mut(&file)
        && s.state == "recording"
    {
        s.state = "done";
        info!(file, bytes = s.bytes, "recording done");
        recorder.finished(s);
    }
}

impl Recorder {
    /// `recording_finished` for the operator's webhooks.
    fn finished(&self, s: &RecordingStatus) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.hooks.send(
            "recording_finished",
            serde_json::json!({
                "file": s.file, "stream": s.stream, "room": s.room, "state": s.state,
                "error": s.error, "bytes": s.bytes,
                "duration_s": s.duration_ms.map_or(now.saturating_sub(s.started) as f64, |ms| ms as f64 / 1000.0),
                "url": format!("/recordings/{}", s.file),
            }),
        );
    }
}

pub fn router(recorder: Arc<Recorder>) -> Router {
    Router::new()
        .route("/api/recordings", get(list).post(start_api))
        .route("/api/recordings/stop", axum::routing::post(stop_api))
        .route("/recordings/{file}", get(download))
        .with_state(recorder)
}

/// The body of `POST /api/recordings` and `/api/recordings/stop`: one of the two.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    stream: Option<String>,
    room: Option<String>,
}

fn json_error(code: StatusCode, why: impl Into<String>) -> Response {
    (code, axum::Json(serde_json::json!({ "error": why.into() }))).into_response()
}

/// What an API call names.
enum RecTarget {
    Stream(StreamName),
    Room(String),
}

/// Reads the body: `{"stream": NAME}` or `{"room": ROOM}`; the error says what is wrong.
fn target(body: &[u8]) -> Result<RecTarget, String> {
    let t: Target = serde_json::from_slice(body)
        .map_err(|e| format!("expected {{\"stream\": NAME}} or {{\"room\": ROOM}}: {e}"))?;
    match (t.stream, t.room) {
        (Some(s), None) => StreamName::parse(&s)
            .map(RecTarget::Stream)
            .map_err(|e| format!("stream: {e}")),
        // A room name is one stream-name segment.
        (None, Some(r)) => match StreamName::parse(&r) {
            Ok(n) if !r.contains('/') => Ok(RecTarget::Room(n.to_string())),
            _ => Err("room: not a room name".into()),
        },
        _ => Err("give exactly one of \"stream\" and \"room\"".into()),
    }
}

/// `POST /api/recordings`: starts recording a live stream, or a room (its members now and any
/// who join until it is stopped).
async fn start_api(State(recorder): State<Arc<Recorder>>, body: Bytes) -> Response {
    let target = match target(&body) {
        Ok(t) => t,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
    };
    use std::sync::atomic::Ordering::Relaxed;
    // Counted again: files may have been removed (or added) since.
    recorder.dir_bytes.store(dir_size(&recorder.dir), Relaxed);
    if recorder.dir_bytes.load(Relaxed) >= recorder.max_dir_bytes {
        return json_error(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "{} holds {} bytes, the most recording.max_dir_gb allows: remove some first",
                recorder.dir.display(),
                recorder.dir_bytes.load(Relaxed)
            ),
        );
    }
    let running = recorder.active().len() + recorder.rooms().len();
    if running >= recorder.max_active {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{running} recordings are running, the most recording.max_active allows: stop one first"
            ),
        );
    }
    match target {
        RecTarget::Stream(name) => {
            if !recorder.hub.streams().iter().any(|s| s.name == name) {
                return json_error(StatusCode::NOT_FOUND, format!("stream {name} is not live"));
            }
            if !recorder.start_stream(name.clone(), true) {
                return json_error(
                    StatusCode::CONFLICT,
                    format!("stream {name} is being recorded already"),
                );
            }
            let body = serde_json::json!({ "stream": name.to_string(), "state": "recording" });
            (StatusCode::CREATED, axum::Json(body)).into_response()
        }
        RecTarget::Room(room) => {
            let now = SystemTime::now();
            let rec = {
                let mut rooms = recorder.rooms();
                if rooms.contains_key(&room) {
                    return json_error(
                        StatusCode::CONFLICT,
                        format!("room {room} is being recorded already"),
                    );
                }
                let stamp = hls::playlist::compact_date(unix_ms(now) / 1000);
                let mut manifest = format!("room-{room}-{stamp}.json");
                let mut n = 1;
                while recorder.dir.join(&manifest).exists() {
                    manifest = format!("room-{room}-{stamp}-{n}.json");
                    n += 1;
                }
                let rec = Arc::new(RoomRecording {
                    room: room.clone(),
                    manifest,
                    started: now,
                    stop: watch::channel(false).0,
                    state: Mutex::new(Manifest {
                        room: room.clone(),
                        started_unix_ms: unix_ms(now),
                        stopped_unix_ms: None,
                        tracks: Vec::new(),
                    }),
                    writing: tokio::sync::Mutex::new(()),
                    jobs: Mutex::new(std::collections::HashSet::new()),
                });
                rooms.insert(room.clone(), rec.clone());
                rec
            };
            write_manifest(&recorder, &rec).await;
            let members: Vec<StreamName> = recorder
                .hub
                .streams()
                .into_iter()
                .filter(|s| room_of(&s.name, s.source).as_deref() == Some(room.as_str()))
                .map(|s| s.name)
                .collect();
            for m in &members {
                recorder.start_member(&rec, m);
            }
            info!(
                room,
                members = members.len(),
                manifest = rec.manifest,
                "recording room"
            );
            let body = serde_json::json!({
                "room": room,
                "state": "recording",
                "manifest": rec.manifest,
                "members": members.iter().map(ToString::to_string).collect::<Vec<_>>(),
            });
            (StatusCode::CREATED, axum::Json(body)).into_response()
        }
    }
}

/// `POST /api/recordings/stop`: stops a stream's or a room's recording; its files are
/// finished (the last fragments written) and stay listed.
async fn stop_api(State(recorder): State<Arc<Recorder>>, body: Bytes) -> Response {
    let target = match target(&body) {
        Ok(t) => t,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
    };
    match target {
        RecTarget::Stream(name) => {
            let Some((_, tx)) = recorder.active().remove(&name.to_string()) else {
                return json_error(
                    StatusCode::NOT_FOUND,
                    format!("stream {name} is not being recorded"),
                );
            };
            let _ = tx.send(true);
            let body = serde_json::json!({ "stream": name.to_string(), "state": "stopped" });
            axum::Json(body).into_response()
        }
        RecTarget::Room(room) => {
            let Some(rec) = recorder.rooms().remove(&room) else {
                return json_error(
                    StatusCode::NOT_FOUND,
                    format!("room {room} is not being recorded"),
                );
            };
            let _ = rec.stop.send(true);
            rec.lock().stopped_unix_ms = Some(unix_ms(SystemTime::now()));
            // The tracks' tasks finish their files and note their ends; give them a moment so
            // the manifest this answer points to is final.
            tokio::time::sleep(Duration::from_millis(300)).await;
            write_manifest(&recorder, &rec).await;
            info!(room, manifest = rec.manifest, "room recording stopped");
            let body = serde_json::json!({
                "room": room,
                "state": "stopped",
                "manifest": rec.manifest,
                "tracks": rec.lock().tracks.clone(),
            });
            axum::Json(body).into_response()
        }
    }
}

/// `GET /api/recordings`: this run's recordings and the files already in the directory.
async fn list(State(recorder): State<Arc<Recorder>>) -> Response {
    let mut out: HashMap<String, RecordingStatus> = recorder.status().clone();
    if let Ok(entries) = std::fs::read_dir(&recorder.dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name.ends_with(".mp4") || name.ends_with(".json");
            if !ours || name.starts_with('.') || out.contains_key(&name) {
                continue;
            }
            let meta = e.metadata().ok();
            out.insert(
                name.clone(),
                RecordingStatus {
                    stream: String::new(),
                    state: "done",
                    bytes: meta.as_ref().map_or(0, |m| m.len()),
                    duration_ms: None,
                    error: None,
                    started: meta
                        .and_then(|m| m.modified().ok())
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs()),
                    file: name,
                    room: None,
                    kind: None,
                },
            );
        }
    }
    let mut list: Vec<RecordingStatus> = out.into_values().collect();
    list.sort_by(|a, b| a.file.cmp(&b.file));
    axum::Json(list).into_response()
}

/// `GET /recordings/FILE`: the file (also while it is being written).
async fn download(
    State(recorder): State<Arc<Recorder>>,
    UrlPath(file): UrlPath<String>,
) -> Response {
    // One path component of our own naming: no separators, no dot files.
    let json = file.ends_with(".json");
    let safe = !file.starts_with('.')
        && (file.ends_with(".mp4") || json)
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !safe {
        return (StatusCode::BAD_REQUEST, "not a recording's file name\n").into_response();
    }
    let path: &Path = &recorder.dir.join(&file);
    // Only files onair wrote: a symlink placed in the directory must not expose what it
    // points at.
    match tokio::fs::symlink_metadata(path).await {
        Ok(m) if m.file_type().is_file() => {}
        Ok(_) => return (StatusCode::NOT_FOUND, "no such recording\n").into_response(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (StatusCode::NOT_FOUND, "no such recording\n").into_response();
        }
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
    let f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (StatusCode::NOT_FOUND, "no such recording\n").into_response();
        }
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    };
    // Streamed in 64 KiB reads: a recording can be far bigger than memory should hold.
    let chunks = futures_util::stream::unfold(f, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let content_type = if json {
        "application/json"
    } else {
        "video/mp4"
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
}

/// Fragments of about a second: a kill loses at most that much.
pub const FRAGMENT: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn recorder(dir: &str) -> Arc<Recorder> {
        Arc::new(Recorder {
            dir: PathBuf::from(dir),
            patterns: vec!["live/*".into(), "exact".into()],
            hub: Hub::new(hub::HubConfig::default()),
            seg: SegmenterConfig::default(),
            status: Mutex::new(HashMap::new()),
            active: Mutex::new(HashMap::new()),
            rooms: Mutex::new(HashMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(0),
            max_active: 64,
            dir_bytes: std::sync::atomic::AtomicU64::new(0),
            max_dir_bytes: u64::MAX,
            hooks: crate::webhooks::Webhooks::none(),
        })
    }

    pub(super) fn status(file: &str) -> RecordingStatus {
        RecordingStatus {
            file: file.into(),
            stream: "live/x".into(),
            state: "recording",
            bytes: 0,
            duration_ms: Some(0),
            error: None,
            started: 0,
            room: None,
            kind: None,
        }
    }

    #[test]
    fn patterns_and_file_names() {
        let r = recorder("/tmp");
        let n = |s: &str| StreamName::parse(s).expect("name");
        assert!(r.wanted(&n("live/show")));
        assert!(r.wanted(&n("exact")));
        assert!(!r.wanted(&n("exactly")));
        assert!(!r.wanted(&n("room/alice")));
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(
            file_name(&n("live/show"), t, 0, ""),
            "live_show-20261118-110640.mp4"
        );
        assert_eq!(
            file_name(&n("live/show"), t, 2, ""),
            "live_show-20261118-110640-2.mp4"
        );
        assert_eq!(
            file_name(&n("demo/alice"), t, 0, "-audio"),
            "demo_alice-20261118-110640-audio.mp4"
        );
        let room = |s: &str| room_of(&n(s), Protocol::Room);
        assert_eq!(room("demo/alice").as_deref(), Some("demo"));
        assert_eq!(room("alone"), None);
        assert_eq!(room_of(&n("demo/alice"), Protocol::Rtmp), None);
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_written_fails_with_its_reason() {
        // /proc refuses new files, whoever runs the test (root included).
        let r = recorder("/proc/onair-recording-test");
        r.status().insert("x.mp4".into(), status("x.mp4"));
        let (tx, rx) = mpsc::channel(4);
        tx.send(Bytes::from_static(b"data")).await.expect("queued");
        drop(tx);
        write_file(r.clone(), r.dir.join("x.mp4"), "x.mp4".into(), rx).await;
        let st = r.status().get("x.mp4").cloned().expect("status");
        assert_eq!(st.state, "failed");
        assert!(
            st.error
                .as_deref()
                .is_some_and(|e| e.contains("creating /proc/onair-recording-test/x.mp4")),
            "{st:?}"
        );
    }

    #[tokio::test]
    async fn a_full_disk_fails_the_recording() {
        // /dev/full takes the open and fails every write with ENOSPC.
        let r = recorder("/dev");
        r.status().insert("full".into(), status("full"));
        let (tx, rx) = mpsc::channel(4);
        tx.send(Bytes::from_static(b"data")).await.expect("queued");
        drop(tx);
        let full = tokio::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .await
            .expect("/dev/full");
        write_chunks(r.clone(), Path::new("/dev/full"), "full".into(), full, rx).await;
        let st = r.status().get("full").cloned().expect("status");
        assert_eq!(st.state, "failed");
        assert!(
            st.error
                .as_deref()
                .is_some_and(|e| e.contains("No space left")),
            "{st:?}"
        );
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    /// The other tests' recorder in `dir`, with `max_active` and a 1000-byte directory limit.
    fn recorder(dir: &Path, max_active: usize) -> Arc<Recorder> {
        let mut r = super::tests::recorder(&dir.to_string_lossy());
        let r_mut = Arc::get_mut(&mut r).expect("not shared yet");
        r_mut.patterns.clear();
        r_mut.max_active = max_active;
        r_mut.max_dir_bytes = 1000;
        r
    }

    #[tokio::test]
    async fn a_symlink_in_the_recording_directory_is_not_served() {
        let dir = std::env::temp_dir().join(format!("onair-rec-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("real.mp4"), b"media").unwrap();
        let link = dir.join("passwd.mp4");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        let r = recorder(&dir, 1);
        let get = |f: &str| download(State(r.clone()), UrlPath(f.to_owned()));
        assert_eq!(get("real.mp4").await.status(), StatusCode::OK);
        assert_eq!(get("passwd.mp4").await.status(), StatusCode::NOT_FOUND);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_full_recording_directory_refuses_new_recordings() {
        let dir = std::env::temp_dir().join(format!("onair-rec-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // max_dir_bytes is 1000 in these tests.
        std::fs::write(dir.join("old.mp4"), vec![0u8; 1500]).unwrap();
        let r = recorder(&dir, 8);
        let body = Bytes::from_static(br#"{"room": "x"}"#);
        let resp = start_api(State(r.clone()), body).await;
        assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE);
        // A running recording that would pass it fails with the reason.
        let (tx, rx) = mpsc::channel(4);
        r.status()
            .insert("new.mp4".into(), super::tests::status("new.mp4"));
        let f = tokio::fs::File::create(dir.join("new.mp4")).await.unwrap();
        tx.send(Bytes::from_static(b"media")).await.unwrap();
        drop(tx);
        write_chunks(r.clone(), &dir.join("new.mp4"), "new.mp4".into(), f, rx).await;
        let st = r.status().get("new.mp4").cloned().unwrap();
        assert_eq!(st.state, "failed");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn recordings_past_max_active_are_refused() {
        let dir = std::env::temp_dir().join(format!("onair-rec-max-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = recorder(&dir, 1);
        let (tx, _) = watch::channel(false);
        r.active().insert("live/a".into(), (0, tx));
        let body = Bytes::from_static(br#"{"room": "x"}"#);
        let resp = start_api(State(r.clone()), body).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
