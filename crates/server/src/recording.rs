//! Server-side recording: streams whose names match `recording.streams` are written to
//! `recording.dir` as fragmented MP4, the same CMAF fragments LL-HLS serves.
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
use hub::{Hub, HubEvent, Item, Protocol, StreamName};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::Config;

/// Fragments waiting to be written per recording; beyond this the disk is too slow and the
/// recording stops with an error rather than hold memory.
const QUEUE: usize = 64;

/// The recorder and what it has recorded.
pub struct Recorder {
    dir: PathBuf,
    patterns: Vec<String>,
    /// Active and ended recordings' status, by file name.
    status: Mutex<HashMap<String, RecordingStatus>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordingStatus {
    /// File name inside `recording.dir`.
    pub file: String,
    pub stream: String,
    /// "recording", "done" or "failed".
    pub state: &'static str,
    pub bytes: u64,
    pub error: Option<String>,
    /// Seconds since 1970 when it started.
    pub started: u64,
}

impl Recorder {
    fn status(&self) -> MutexGuard<'_, HashMap<String, RecordingStatus>> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
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
pub fn start(config: &Config, hub: Hub) -> Option<Arc<Recorder>> {
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
    let recorder = Arc::new(Recorder {
        dir,
        patterns: r.streams.clone(),
        status: Mutex::new(HashMap::new()),
    });
    tokio::spawn(watch_hub(
        recorder.clone(),
        hub,
        config.recording_segmenter(),
    ));
    Some(recorder)
}

async fn watch_hub(recorder: Arc<Recorder>, hub: Hub, seg: SegmenterConfig) {
    let mut events = hub.events();
    loop {
        match events.recv().await {
            Ok(HubEvent::Started(name, _)) if recorder.wanted(&name) => {
                tokio::spawn(record(recorder.clone(), hub.clone(), name, seg));
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                warn!("recording missed {n} hub events");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// A file name for `name` starting now: `live_show-20261123-231500.mp4`.
fn file_name(name: &StreamName, now: SystemTime, n: u32) -> String {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let stamp = hls::playlist::compact_date(secs);
    let base = name.to_string().replace('/', "_");
    if n == 0 {
        format!("{base}-{stamp}.mp4")
    } else {
        format!("{base}-{stamp}-{n}.mp4")
    }
}

/// Reads one stream and writes its fragments.
async fn record(recorder: Arc<Recorder>, hub: Hub, name: StreamName, config: SegmenterConfig) {
    let Some(mut reader) = hub.subscribe(&name, Protocol::Recording) else {
        return;
    };
    let mut seg = Segmenter::new(config);
    let mut writer: Option<(u32, mpsc::Sender<Bytes>, String)> = None;
    let mut written = (0u64, 0usize); // (msn, parts) already handed to the writer
    let mut files = 0;
    while let Some(item) = reader.recv().await {
        let r = match &item {
            Item::Tracks(t) => seg.set_tracks(t),
            Item::Frame(f) => seg.push(f, SystemTime::now()),
        };
        if let Err(e) = r {
            warn!(stream = %name, "not recording: {e}");
            continue;
        }
        // Fragments end at keyframes' segments too: ask a WebRTC source for them, as HLS does.
        if seg.keyframe_request(std::time::Instant::now()) {
            reader.request_keyframe();
        }
        let Some((init_id, init)) = seg.init().map(|(i, b)| (i, b.clone())) else {
            continue;
        };
        // A new init segment (first, or after a track change) starts a new file.
        if writer.as_ref().is_none_or(|(id, _, _)| *id != init_id) && !seg.segments().is_empty() {
            // Never overwrite: a republish within the same second gets the next number.
            let mut file = file_name(&name, SystemTime::now(), files);
            while recorder.dir.join(&file).exists() || recorder.status().contains_key(&file) {
                files += 1;
                file = file_name(&name, SystemTime::now(), files);
            }
            files += 1;
            let (tx, rx) = mpsc::channel(QUEUE);
            let path = recorder.dir.join(&file);
            recorder.status().insert(
                file.clone(),
                RecordingStatus {
                    file: file.clone(),
                    stream: name.to_string(),
                    state: "recording",
                    bytes: 0,
                    error: None,
                    started: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs(),
                },
            );
            info!(stream = %name, file, "recording");
            tokio::spawn(write_file(recorder.clone(), path, file.clone(), rx));
            let _ = tx.try_send(init);
            writer = Some((init_id, tx, file));
        }
        // Hand over every part cut since the last look.
        let Some((id, tx, file)) = writer.as_ref() else {
            continue;
        };
        for data in new_parts(&seg, *id, &mut written) {
            if tx.try_send(data).is_err() {
                fail(
                    &recorder,
                    file,
                    "the disk is too slow: recording stopped".into(),
                );
                break;
            }
        }
    }
    if let Err(e) = seg.finish() {
        warn!(stream = %name, "recording finish: {e}");
    }
    if let Some((id, tx, _)) = writer.as_ref() {
        for data in new_parts(&seg, *id, &mut written) {
            let _ = tx.send(data).await;
        }
    }
    // Dropping the sender lets the writer finish the file.
}

/// The parts of init `init`'s segments cut since `written` (segment, parts of it already
/// taken), which it moves past them.
fn new_parts(seg: &Segmenter, init: u32, written: &mut (u64, usize)) -> Vec<Bytes> {
    let mut out = Vec::new();
    for s in seg.segments() {
        if s.init != init || s.msn < written.0 {
            continue;
        }
        let from = if s.msn == written.0 { written.1 } else { 0 };
        out.extend(s.parts.iter().skip(from).map(|p| p.data.clone()));
        *written = (s.msn, s.parts.len());
    }
    out
}

fn fail(recorder: &Recorder, file: &str, why: String) {
    let mut st = recorder.status();
    if let Some(s) = st.get_mut(file)
        && s.state != "failed"
    {
        warn!(file, "recording failed: {why}");
        s.state = "failed";
        s.error = Some(why);
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
    while let Some(chunk) = rx.recv().await {
        if recorder
            .status()
            .get(&file)
            .is_some_and(|s| s.state == "failed")
        {
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
        if let Some(s) = recorder.status().get_mut(&file) {
            s.bytes += chunk.len() as u64;
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
    }
}

pub fn router(recorder: Arc<Recorder>) -> Router {
    Router::new()
        .route("/api/recordings", get(list))
        .route("/recordings/{file}", get(download))
        .with_state(recorder)
}

/// `GET /api/recordings`: this run's recordings and the files already in the directory.
async fn list(State(recorder): State<Arc<Recorder>>) -> Response {
    let mut out: HashMap<String, RecordingStatus> = recorder.status().clone();
    if let Ok(entries) = std::fs::read_dir(&recorder.dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".mp4") || out.contains_key(&name) {
                continue;
            }
            let meta = e.metadata().ok();
            out.insert(
                name.clone(),
                RecordingStatus {
                    stream: String::new(),
                    state: "done",
                    bytes: meta.as_ref().map_or(0, |m| m.len()),
                    error: None,
                    started: meta
                        .and_then(|m| m.modified().ok())
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs()),
                    file: name,
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
    let safe = !file.starts_with('.')
        && file.ends_with(".mp4")
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !safe {
        return (StatusCode::BAD_REQUEST, "not a recording's file name\n").into_response();
    }
    let path: &Path = &recorder.dir.join(&file);
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
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("video/mp4")),
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

    fn recorder(dir: &str) -> Arc<Recorder> {
        Arc::new(Recorder {
            dir: PathBuf::from(dir),
            patterns: vec!["live/*".into(), "exact".into()],
            status: Mutex::new(HashMap::new()),
        })
    }

    fn status(file: &str) -> RecordingStatus {
        RecordingStatus {
            file: file.into(),
            stream: "live/x".into(),
            state: "recording",
            bytes: 0,
            error: None,
            started: 0,
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
            file_name(&n("live/show"), t, 0),
            "live_show-20261118-110640.mp4"
        );
        assert_eq!(
            file_name(&n("live/show"), t, 2),
            "live_show-20261118-110640-2.mp4"
        );
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
