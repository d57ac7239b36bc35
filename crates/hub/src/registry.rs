//! The registry of live streams: one publisher per name, any number of readers.
//!
//! A stream keeps the frames since its last video keyframe (its GOP) so that a new reader
//! starts at a picture it can decode. Frames reach readers through a bounded broadcast queue;
//! a reader that falls a whole queue behind loses the oldest frames, waits for the next video
//! keyframe (audio resumes at once) and the stream's `skips` counter rises. No reader can hold
//! up the publisher or another reader: a push never waits.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{Notify, broadcast};

use crate::media::{Frame, MediaKind, TrackInfo};
use crate::name::StreamName;

/// Which protocol publishes a stream, or reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Protocol {
    /// RTMP (FFmpeg, OBS).
    Rtmp,
    /// WHIP ingest / WHEP playback.
    Whip,
    /// WHEP playback.
    Whep,
    /// A room participant's published tracks.
    Room,
    /// RTWebSocket.
    Rtws,
    /// A plain WebSocket (`/ws/NAME`, the fallback without RTWebSocket).
    WebSocket,
    /// LL-HLS / HLS.
    Hls,
    /// Server-side recording.
    Recording,
    /// Anything else (tests, tools).
    Other,
}

/// What a second publisher of a busy name gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    /// It is refused; the first keeps the name.
    #[default]
    Refuse,
    /// It takes the name over; the first is told to stop and its readers see the end.
    Takeover,
}

/// Hub settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// A second publisher of a busy name.
    pub on_conflict: ConflictPolicy,
    /// Frames a reader may fall behind before it skips to the next keyframe.
    pub reader_queue: usize,
    /// Bytes of GOP kept for new readers; a longer GOP is not cached (readers then wait for
    /// the next keyframe).
    pub max_gop_bytes: usize,
    /// Streams published at once; a publish past it is refused.
    pub max_streams: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            on_conflict: ConflictPolicy::Refuse,
            reader_queue: 512,
            max_gop_bytes: 16 * 1024 * 1024,
            max_streams: 10_000,
        }
    }
}

/// Why a publish was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The name is taken and the policy is to refuse.
    #[error("stream '{name}' is already being published (over {by:?})")]
    Busy {
        /// The name.
        name: StreamName,
        /// How the current publisher publishes.
        by: Protocol,
    },
    /// As many streams as `HubConfig::max_streams` are published.
    #[error("{0} streams are published, the most this server allows (streams.max_streams)")]
    TooMany(usize),
}

/// Something that happened to the set of streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubEvent {
    /// A publisher took a name.
    Started(StreamName, Protocol),
    /// A publisher let go of a name (it stopped, failed, or was taken over).
    Ended(StreamName),
}

/// What a reader receives.
#[derive(Debug, Clone)]
pub enum Item {
    /// The stream's tracks: first, and again whenever the publisher changes them.
    Tracks(Arc<[TrackInfo]>),
    /// A frame.
    Frame(Arc<Frame>),
}

/// A stream as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamInfo {
    /// Its name.
    pub name: StreamName,
    /// Who publishes it.
    pub source: Protocol,
    /// Its tracks.
    pub tracks: Vec<TrackInfo>,
    /// Readers attached to the hub, by protocol.
    pub readers: BTreeMap<Protocol, usize>,
    /// Payload bytes pushed so far.
    pub bytes_in: u64,
    /// Frames pushed so far.
    pub frames_in: u64,
    /// Times a reader fell behind and skipped to a keyframe.
    pub skips: u64,
    /// When publishing started.
    #[serde(skip)]
    pub started: Instant,
    /// When a viewer last asked for it outside the readers (see [`Hub::note_viewed`]).
    #[serde(skip)]
    pub viewed: Option<Instant>,
}

/// The registry. Cheap to clone; every clone is the same hub.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

/// How long a publish may hold its name without a frame before a new publisher may take it.
pub const SQUAT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

struct Shared {
    config: HubConfig,
    streams: Mutex<BTreeMap<StreamName, Arc<Stream>>>,
    events: broadcast::Sender<HubEvent>,
    next_epoch: AtomicU64,
}

struct Stream {
    name: StreamName,
    source: Protocol,
    epoch: u64,
    started: Instant,
    state: Mutex<StreamState>,
    kicked: AtomicBool,
    kick: Notify,
    skips: Arc<AtomicU64>,
    /// Keyframe requests from readers so far, and how many the publisher has taken.
    keyframes_wanted: AtomicU64,
    keyframes_taken: AtomicU64,
    /// When a viewer the hub does not see as a reader last asked for it (an HLS player's
    /// request: HLS packages every stream whether anyone plays it), in milliseconds since
    /// `started`, plus one (0: never).
    viewed_ms: AtomicU64,
}

struct StreamState {
    tracks: Arc<[TrackInfo]>,
    /// Since the last video keyframe; empty while not caching.
    gop: VecDeque<Item>,
    gop_bytes: usize,
    queue: Queue,
    readers: BTreeMap<Protocol, usize>,
    bytes_in: u64,
    frames_in: u64,
}

/// The queue a stream's readers share. It is made when the first reader comes and let go when
/// a frame finds no reader left: its slots are allocated whole (`reader_queue` of them, 24 KiB
/// at the default), and a stream nobody reads (an ingest no one watches yet) needs none.
enum Queue {
    Unread,
    Open(broadcast::Sender<Item>),
    /// Ended or taken over: readers drain what is queued, then see the end.
    Ended,
}

impl StreamState {
    fn send(&mut self, item: Item) {
        if let Queue::Open(tx) = &self.queue
            && tx.send(item).is_err()
        {
            // Every reader has gone: free the slots until one comes again.
            self.queue = Queue::Unread;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a hub lock leaves plain data behind, still consistent enough to
    // serve other streams; poisoning would take every stream down with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// An empty hub.
    pub fn new(config: HubConfig) -> Hub {
        let (events, _) = broadcast::channel(256);
        Hub {
            shared: Arc::new(Shared {
                config,
                streams: Mutex::new(BTreeMap::new()),
                events,
                next_epoch: AtomicU64::new(1),
            }),
        }
    }

    /// Starts publishing `name`. With the takeover policy, a current publisher of the name is
    /// told to stop ([`Publisher::kicked`]) and its readers see the end.
    pub fn publish(
        &self,
        name: StreamName,
        source: Protocol,
        now: Instant,
    ) -> Result<Publisher, PublishError> {
        let mut streams = lock(&self.shared.streams);
        if let Some(old) = streams.get(&name) {
            // A claim that has carried no frame for `SQUAT_GRACE` (a WHIP POST that never
            // connected, an RTMP publish that never sent media) does not hold the name against
            // a new publisher: refusing would let anyone squat names.
            let squatted = lock(&old.state).frames_in == 0
                && now.saturating_duration_since(old.started) >= SQUAT_GRACE;
            match self.shared.config.on_conflict {
                ConflictPolicy::Refuse if !squatted => {
                    return Err(PublishError::Busy {
                        name,
                        by: old.source,
                    });
                }
                ConflictPolicy::Refuse | ConflictPolicy::Takeover => {
                    old.kicked.store(true, Ordering::Release);
                    old.kick.notify_waiters();
                    end(old);
                    let _ = self.shared.events.send(HubEvent::Ended(name.clone()));
                }
            }
        }
        if !streams.contains_key(&name) && streams.len() >= self.shared.config.max_streams {
            return Err(PublishError::TooMany(streams.len()));
        }
        let stream = Arc::new(Stream {
            name: name.clone(),
            source,
            epoch: self.shared.next_epoch.fetch_add(1, Ordering::Relaxed),
            started: now,
            state: Mutex::new(StreamState {
                tracks: Arc::from(Vec::new()),
                gop: VecDeque::new(),
                gop_bytes: 0,
                queue: Queue::Unread,
                readers: BTreeMap::new(),
                bytes_in: 0,
                frames_in: 0,
            }),
            kicked: AtomicBool::new(false),
            kick: Notify::new(),
            skips: Arc::new(AtomicU64::new(0)),
            keyframes_wanted: AtomicU64::new(0),
            keyframes_taken: AtomicU64::new(0),
            viewed_ms: AtomicU64::new(0),
        });
        streams.insert(name.clone(), stream.clone());
        drop(streams);
        let _ = self.shared.events.send(HubEvent::Started(name, source));
        Ok(Publisher {
            hub: self.clone(),
            stream,
        })
    }

    /// Stops the publisher of `name` (the operator's API): it is told as by a takeover
    /// ([`Publisher::kicked`]: its RTMP connection closes, its WHIP session ends) and its
    /// readers see the end. False when nothing is published under that name.
    pub fn stop(&self, name: &StreamName) -> bool {
        let mut streams = lock(&self.shared.streams);
        let Some(old) = streams.remove(name) else {
            return false;
        };
        drop(streams);
        old.kicked.store(true, Ordering::Release);
        old.kick.notify_waiters();
        end(&old);
        let _ = self.shared.events.send(HubEvent::Ended(name.clone()));
        true
    }

    /// Starts reading `name`: the tracks first, then the frames from the last keyframe on.
    /// `None` when nobody publishes it.
    pub fn subscribe(&self, name: &StreamName, proto: Protocol) -> Option<Reader> {
        self.open_reader(name, Some(proto))
    }

    /// A reader that is not counted among the stream's readers: one that feeds viewers who
    /// are counted with [`Hub::watch`] (the WebRTC side reads a stream once per shard for all
    /// its WHEP viewers there).
    pub fn subscribe_uncounted(&self, name: &StreamName) -> Option<Reader> {
        self.open_reader(name, None)
    }

    /// Counts a viewer of `name` as a reader of protocol `proto` for as long as the guard
    /// lives, without reading anything (it is served from another reader's frames, or by the
    /// SFU). `None` when nobody publishes it.
    pub fn watch(&self, name: &StreamName, proto: Protocol) -> Option<Watch> {
        let stream = lock(&self.shared.streams).get(name)?.clone();
        let mut st = lock(&stream.state);
        if matches!(st.queue, Queue::Ended) {
            return None;
        }
        *st.readers.entry(proto).or_default() += 1;
        drop(st);
        Some(Watch {
            stream,
            proto: Some(proto),
        })
    }

    fn open_reader(&self, name: &StreamName, proto: Option<Protocol>) -> Option<Reader> {
        let stream = lock(&self.shared.streams).get(name)?.clone();
        let mut st = lock(&stream.state);
        let rx = match &st.queue {
            Queue::Open(tx) => tx.subscribe(),
            Queue::Unread => {
                let (tx, rx) = broadcast::channel(self.shared.config.reader_queue.max(16));
                st.queue = Queue::Open(tx);
                rx
            }
            Queue::Ended => return None,
        };
        let mut pending = VecDeque::with_capacity(st.gop.len() + 1);
        pending.push_back(Item::Tracks(st.tracks.clone()));
        pending.extend(st.gop.iter().cloned());
        // No GOP kept (none yet, one too long, or `max_gop_bytes` 0): the reader's video starts
        // at the next keyframe, never at a picture its decoder cannot use, and a WebRTC
        // publisher is asked for one; audio flows at once.
        let from_next_keyframe = st.gop.is_empty();
        let video = st.tracks.iter().any(|t| t.kind() == MediaKind::Video);
        if let Some(proto) = proto {
            *st.readers.entry(proto).or_default() += 1;
        }
        drop(st);
        let reader = Reader {
            _count: Watch {
                stream: stream.clone(),
                proto,
            },
            stream,
            rx,
            pending,
            waiting_keyframe: from_next_keyframe,
            resumed: Vec::new(),
            ended: false,
        };
        if from_next_keyframe && video {
            reader.request_keyframe();
        }
        Some(reader)
    }

    /// One stream, if it is live.
    pub fn stream(&self, name: &StreamName) -> Option<StreamInfo> {
        lock(&self.shared.streams).get(name).map(|s| info(s))
    }

    /// Every live stream, by name.
    pub fn streams(&self) -> Vec<StreamInfo> {
        lock(&self.shared.streams)
            .values()
            .map(|s| info(s))
            .collect()
    }

    /// Someone plays `name` without being a reader: an HLS player fetched a playlist or a
    /// segment of it. Publishers that can send less when nobody watches (a room member's
    /// simulcast layers) look at this.
    pub fn note_viewed(&self, name: &StreamName) {
        if let Some(s) = lock(&self.shared.streams).get(name) {
            let ms = s.started.elapsed().as_millis() as u64 + 1;
            s.viewed_ms.fetch_max(ms, Ordering::Relaxed);
        }
    }

    /// Streams starting and ending, from now on.
    pub fn events(&self) -> broadcast::Receiver<HubEvent> {
        self.shared.events.subscribe()
    }
}

fn info(s: &Stream) -> StreamInfo {
    let st = lock(&s.state);
    StreamInfo {
        name: s.name.clone(),
        source: s.source,
        tracks: st.tracks.to_vec(),
        readers: st.readers.clone(),
        bytes_in: st.bytes_in,
        frames_in: st.frames_in,
        skips: s.skips.load(Ordering::Relaxed),
        started: s.started,
        viewed: match s.viewed_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(s.started + std::time::Duration::from_millis(ms - 1)),
        },
    }
}

/// Closes a stream's queue: readers drain what is queued, then see the end.
fn end(stream: &Stream) {
    let mut st = lock(&stream.state);
    st.queue = Queue::Ended;
    st.gop.clear();
    st.gop_bytes = 0;
}

/// The right to publish one name. Dropping it ends the stream.
pub struct Publisher {
    hub: Hub,
    stream: Arc<Stream>,
}

impl Publisher {
    /// Whether a reader asked for a keyframe since the last call. A publisher that can make
    /// one on demand (a WebRTC source: a PLI to the browser) should; others ignore it.
    pub fn take_keyframe_request(&self) -> bool {
        let wanted = self.stream.keyframes_wanted.load(Ordering::Relaxed);
        self.stream.keyframes_taken.swap(wanted, Ordering::Relaxed) != wanted
    }

    /// The stream's name.
    pub fn name(&self) -> &StreamName {
        &self.stream.name
    }

    /// Sets the track list. Readers receive it before the next frame. Frames name tracks by
    /// their index in this list.
    pub fn set_tracks(&self, tracks: Vec<TrackInfo>) {
        let mut st = lock(&self.stream.state);
        st.tracks = Arc::from(tracks);
        let item = Item::Tracks(st.tracks.clone());
        // A reader joining later gets the tracks first anyway; the GOP must not replay an old
        // list after the new one.
        st.gop.retain(|i| matches!(i, Item::Frame(_)));
        st.send(item);
    }

    /// The current track list.
    pub fn tracks(&self) -> Arc<[TrackInfo]> {
        lock(&self.stream.state).tracks.clone()
    }

    /// Hands a frame to every reader. Never waits.
    pub fn push(&self, frame: Frame) {
        let max_gop = self.hub.shared.config.max_gop_bytes;
        let mut st = lock(&self.stream.state);
        if matches!(st.queue, Queue::Ended) {
            return; // taken over: nobody reads this publisher any more
        }
        // The main video's keyframes start a GOP; a lower simulcast layer carried on its own
        // (an HLS variant) has keyframes of its own, which say nothing about the main picture.
        let video = st
            .tracks
            .get(frame.track)
            .is_some_and(|t| t.kind() == MediaKind::Video && t.layer.is_none());
        let (len, keyframe) = (frame.data.len(), frame.keyframe);
        st.bytes_in += len as u64;
        st.frames_in += 1;
        let item = Item::Frame(Arc::new(frame));
        let has_video = st.tracks.iter().any(|t| t.kind() == MediaKind::Video);
        if video && keyframe {
            st.gop.clear();
            st.gop_bytes = 0;
        }
        let caching = !st.gop.is_empty() || (video && keyframe);
        if caching && has_video {
            if st.gop_bytes + len <= max_gop {
                st.gop_bytes += len;
                st.gop.push_back(item.clone());
            } else {
                // A GOP too long to keep: new readers wait for the next keyframe.
                st.gop.clear();
                st.gop_bytes = 0;
            }
        }
        st.send(item);
    }

    /// True once another publisher took the name over.
    pub fn is_kicked(&self) -> bool {
        self.stream.kicked.load(Ordering::Acquire)
    }

    /// Resolves when another publisher takes the name over.
    pub async fn kicked(&self) {
        self.kick_signal().await;
    }

    /// [`Publisher::kicked`] as a future that does not borrow the publisher: for an IO loop
    /// that holds the publisher in state it mutates while it waits.
    pub fn kick_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let stream = self.stream.clone();
        async move {
            loop {
                let notified = stream.kick.notified();
                if stream.kicked.load(Ordering::Acquire) {
                    return;
                }
                notified.await;
            }
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        end(&self.stream);
        let mut streams = lock(&self.hub.shared.streams);
        // A takeover replaced the entry already; remove only our own.
        let ours = streams
            .get(&self.stream.name)
            .is_some_and(|s| s.epoch == self.stream.epoch);
        if ours {
            streams.remove(&self.stream.name);
            drop(streams);
            let _ = self
                .hub
                .shared
                .events
                .send(HubEvent::Ended(self.stream.name.clone()));
        }
    }
}

/// One reader of one stream.
pub struct Reader {
    stream: Arc<Stream>,
    /// Its place among the stream's readers (none for an uncounted one), given back on drop.
    _count: Watch,
    rx: broadcast::Receiver<Item>,
    pending: VecDeque<Item>,
    /// After a skip (or `start_from_now`), video waits for a keyframe, track by track: each
    /// video track's frames are dropped until its own keyframe (`resumed` lists those that had
    /// one), so that no track resumes on frames whose references were skipped.
    waiting_keyframe: bool,
    resumed: Vec<usize>,
    ended: bool,
}

impl Reader {
    /// The stream's name.
    pub fn name(&self) -> &StreamName {
        &self.stream.name
    }

    /// The next item; `None` once the stream ended.
    pub async fn recv(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.ended {
                return None;
            }
            let r = self.rx.recv().await;
            if let Some(item) = self.accept(r) {
                return Some(item);
            }
        }
    }

    /// The next item if one is ready; `Ok(None)` when none is, `Err(())` once the stream ended.
    #[allow(clippy::result_unit_err)]
    pub fn try_recv(&mut self) -> Result<Option<Item>, ()> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Ok(Some(item));
            }
            if self.ended {
                return Err(());
            }
            let r = match self.rx.try_recv() {
                Ok(i) => Ok(i),
                Err(broadcast::error::TryRecvError::Empty) => return Ok(None),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    Err(broadcast::error::RecvError::Lagged(n))
                }
                Err(broadcast::error::TryRecvError::Closed) => {
                    Err(broadcast::error::RecvError::Closed)
                }
            };
            if let Some(item) = self.accept(r) {
                return Ok(Some(item));
            }
        }
    }

    /// Skips the frames kept for a new reader (the GOP so far, which from a WebRTC source may
    /// be many seconds old) and starts at the next video keyframe instead; audio from now on.
    /// For readers that must begin at the moment they were asked to (a recording started by
    /// the API). Pair it with [`Reader::request_keyframe`].
    pub fn start_from_now(&mut self) {
        self.pending.retain(|i| matches!(i, Item::Tracks(_)));
        self.waiting_keyframe = true;
        self.resumed.clear();
    }

    /// Asks the publisher for a video keyframe (HLS cuts segments at keyframes, and WebRTC
    /// encoders make them only when asked).
    pub fn request_keyframe(&self) {
        self.stream.keyframes_wanted.fetch_add(1, Ordering::Relaxed);
    }

    /// Times this stream's readers fell behind and skipped ahead.
    pub fn skips(&self) -> u64 {
        self.stream.skips.load(Ordering::Relaxed)
    }

    fn accept(&mut self, r: Result<Item, broadcast::error::RecvError>) -> Option<Item> {
        match r {
            Err(broadcast::error::RecvError::Closed) => {
                self.ended = true;
                None
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                self.stream.skips.fetch_add(1, Ordering::Relaxed);
                self.waiting_keyframe = true;
                self.resumed.clear();
                // What the skip lost may include a track list change, and what is still queued
                // may be frames of that new list: resuming at a queued keyframe with the old
                // list is garbage to a decoder (an H.264 picture of a new size read with the
                // old SPS). So everything still queued goes too, and the reader starts again
                // from the current list, at the next keyframe. The state lock is held while
                // draining: the publisher sends under it, so nothing slips in between.
                let st = lock(&self.stream.state);
                loop {
                    match self.rx.try_recv() {
                        Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                        Err(broadcast::error::TryRecvError::Empty) => break,
                        Err(broadcast::error::TryRecvError::Closed) => {
                            self.ended = true;
                            break;
                        }
                    }
                }
                let tracks = st.tracks.clone();
                drop(st);
                // A WebRTC publisher makes keyframes only when asked.
                self.request_keyframe();
                Some(Item::Tracks(tracks))
            }
            Ok(Item::Frame(f)) if self.waiting_keyframe => {
                let tracks = lock(&self.stream.state).tracks.clone();
                let pass = match tracks.get(f.track).map(|t| t.kind()) {
                    Some(MediaKind::Video) if self.resumed.contains(&f.track) => true,
                    Some(MediaKind::Video) if f.keyframe => {
                        self.resumed.push(f.track);
                        true
                    }
                    Some(MediaKind::Video) | None => false,
                    // Audio first: it resumes at once.
                    Some(MediaKind::Audio) => true,
                };
                // Every video track has had its keyframe: back to passing everything.
                if tracks
                    .iter()
                    .enumerate()
                    .all(|(i, t)| t.kind() != MediaKind::Video || self.resumed.contains(&i))
                {
                    self.waiting_keyframe = false;
                    self.resumed.clear();
                }
                pass.then_some(Item::Frame(f))
            }
            Ok(item) => Some(item),
        }
    }
}

/// One viewer counted among a stream's readers while it lives ([`Hub::watch`]).
pub struct Watch {
    stream: Arc<Stream>,
    proto: Option<Protocol>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let Some(proto) = self.proto else {
            return;
        };
        let mut st = lock(&self.stream.state);
        if let Some(n) = st.readers.get_mut(&proto) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.readers.remove(&proto);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Codec;

    fn name(s: &str) -> StreamName {
        StreamName::parse(s).unwrap()
    }

    fn av_publisher(hub: &Hub, n: &str) -> Publisher {
        let p = hub
            .publish(name(n), Protocol::Rtmp, Instant::now())
            .unwrap();
        p.set_tracks(vec![
            TrackInfo::new(Codec::H264),
            TrackInfo::new(Codec::Aac),
        ]);
        p
    }

    fn frame(track: usize, t: i64, keyframe: bool) -> Frame {
        Frame {
            track,
            pts: t,
            dts: t,
            keyframe,
            data: vec![t as u8; 10].into(),
        }
    }

    /// Drains what is ready: (track, pts) of each frame.
    fn ready(r: &mut Reader) -> Vec<(usize, i64)> {
        let mut v = Vec::new();
        while let Ok(Some(item)) = r.try_recv() {
            if let Item::Frame(f) = item {
                v.push((f.track, f.pts));
            }
        }
        v
    }

    #[test]
    fn a_new_reader_starts_at_the_last_keyframe() {
        let hub = Hub::new(HubConfig::default());
        let p = av_publisher(&hub, "live/a");
        p.push(frame(0, 0, true));
        p.push(frame(0, 1, false));
        p.push(frame(0, 2, true));
        p.push(frame(1, 3, true));
        p.push(frame(0, 4, false));
        let mut r = hub.subscribe(&name("live/a"), Protocol::Whep).unwrap();
        assert!(matches!(r.try_recv(), Ok(Some(Item::Tracks(t))) if t.len() == 2));
        assert_eq!(ready(&mut r), vec![(0, 2), (1, 3), (0, 4)]);
        p.push(frame(0, 5, false));
        assert_eq!(ready(&mut r), vec![(0, 5)]);
    }

    #[test]
    fn the_readers_queue_exists_only_while_someone_reads() {
        let hub = Hub::new(HubConfig::default());
        let p = av_publisher(&hub, "live/q");
        let queued = |p: &Publisher| matches!(lock(&p.stream.state).queue, Queue::Open(_));
        p.push(frame(0, 0, true));
        assert!(!queued(&p), "no reader, no queue");
        let mut r = hub.subscribe(&name("live/q"), Protocol::Whep).unwrap();
        assert!(queued(&p));
        p.push(frame(0, 1, false));
        assert!(matches!(r.try_recv(), Ok(Some(Item::Tracks(_)))));
        assert_eq!(ready(&mut r), vec![(0, 0), (0, 1)]);
        drop(r);
        p.push(frame(0, 2, false));
        assert!(
            !queued(&p),
            "the last reader left: the queue goes at the next frame"
        );
        // A reader coming back gets a new queue, the GOP and what follows.
        let mut r = hub.subscribe(&name("live/q"), Protocol::Whep).unwrap();
        p.push(frame(1, 3, true));
        assert!(matches!(r.try_recv(), Ok(Some(Item::Tracks(_)))));
        assert_eq!(ready(&mut r), vec![(0, 0), (0, 1), (0, 2), (1, 3)]);
        // The end still reaches readers, and no reader comes after it.
        drop(p);
        assert!(matches!(r.try_recv(), Err(())));
        assert!(hub.subscribe(&name("live/q"), Protocol::Whep).is_none());
    }

    #[test]
    fn a_reader_can_start_from_now_at_the_next_keyframe() {
        let hub = Hub::new(HubConfig::default());
        let p = av_publisher(&hub, "live/now");
        p.push(frame(0, 0, true));
        p.push(frame(0, 1, false));
        let mut r = hub
            .subscribe(&name("live/now"), Protocol::Recording)
            .unwrap();
        r.start_from_now();
        assert!(matches!(r.try_recv(), Ok(Some(Item::Tracks(_)))));
        p.push(frame(1, 2, true)); // audio: at once
        p.push(frame(0, 3, false)); // video before a keyframe: skipped
        p.push(frame(0, 4, true));
        p.push(frame(0, 5, false));
        assert_eq!(ready(&mut r), vec![(1, 2), (0, 4), (0, 5)]);
    }

    #[test]
    fn a_slow_reader_skips_to_the_next_keyframe_and_audio_goes_on() {
        let hub = Hub::new(HubConfig {
            reader_queue: 16,
            ..HubConfig::default()
        });
        let p = av_publisher(&hub, "live/slow");
        p.push(frame(0, 0, true));
        let mut slow = hub.subscribe(&name("live/slow"), Protocol::Whep).unwrap();
        let mut fast = hub.subscribe(&name("live/slow"), Protocol::Hls).unwrap();
        let _ = ready(&mut fast);
        // 40 frames without the slow reader reading: it falls a whole queue behind.
        for t in 1..=40 {
            p.push(frame(0, t, false));
            assert_eq!(
                ready(&mut fast),
                vec![(0, t)],
                "the fast reader is never held up"
            );
        }
        // The slow reader finds it fell behind: what is still queued goes (it may belong to a
        // track list the reader missed), the current list comes again, and a keyframe is asked.
        let wanted = p.take_keyframe_request();
        assert!(!wanted);
        let got = ready(&mut slow);
        assert_eq!(
            got,
            vec![(0, 0)],
            "the GOP it started with, then nothing stale"
        );
        assert!(p.take_keyframe_request(), "the reader asked for a keyframe");
        p.push(frame(1, 41, true)); // audio
        p.push(frame(0, 42, false)); // video, not decodable after the gap
        p.push(frame(0, 43, true)); // the next keyframe
        p.push(frame(0, 44, false));
        let got = ready(&mut slow);
        // Audio at once, video from the next keyframe.
        assert_eq!(got, vec![(1, 41), (0, 43), (0, 44)], "{got:?}");
        assert_eq!(slow.skips(), 1);
        assert_eq!(hub.stream(&name("live/slow")).unwrap().skips, 1);
    }

    #[test]
    fn after_a_skip_each_video_track_waits_for_its_own_keyframe() {
        // The main video (0), audio (1) and a lower simulcast layer carried on its own (2).
        let hub = Hub::new(HubConfig {
            reader_queue: 16,
            ..HubConfig::default()
        });
        let p = hub
            .publish(name("live/layers"), Protocol::Whip, Instant::now())
            .unwrap();
        let mut layer = TrackInfo::new(Codec::H264);
        layer.layer = Some(0);
        p.set_tracks(vec![
            TrackInfo::new(Codec::H264),
            TrackInfo::new(Codec::Opus),
            layer,
        ]);
        p.push(frame(0, 0, true));
        // The layer's keyframe does not start a new GOP for new readers.
        p.push(frame(2, 1, true));
        let mut late = hub.subscribe(&name("live/layers"), Protocol::Hls).unwrap();
        let got = ready(&mut late);
        assert!(
            got.contains(&(0, 0)),
            "the GOP starts at the main keyframe: {got:?}"
        );
        let mut slow = hub.subscribe(&name("live/layers"), Protocol::Hls).unwrap();
        for t in 2..=40 {
            p.push(frame(0, t, false));
        }
        assert!(
            ready(&mut slow).iter().all(|(_, t)| *t < 2),
            "lagged: the rest is dropped"
        );
        p.push(frame(2, 41, true)); // the layer's keyframe: the layer resumes
        p.push(frame(0, 42, false)); // main still waits for its own
        p.push(frame(2, 43, false));
        p.push(frame(0, 44, true)); // main resumes
        p.push(frame(0, 45, false));
        let got = ready(&mut slow);
        let after_gap: Vec<_> = got.into_iter().filter(|(_, t)| *t >= 41).collect();
        assert_eq!(after_gap, vec![(2, 41), (2, 43), (0, 44), (0, 45)]);
    }

    #[test]
    fn dropping_the_publisher_ends_the_stream_for_readers() {
        let hub = Hub::new(HubConfig::default());
        let mut events = hub.events();
        let p = av_publisher(&hub, "live/end");
        let mut r = hub.subscribe(&name("live/end"), Protocol::Whep).unwrap();
        p.push(frame(0, 0, true));
        drop(p);
        assert_eq!(ready(&mut r), vec![(0, 0)], "queued frames still arrive");
        assert!(r.try_recv().is_err());
        assert!(hub.stream(&name("live/end")).is_none());
        assert!(hub.subscribe(&name("live/end"), Protocol::Whep).is_none());
        assert_eq!(
            events.try_recv().unwrap(),
            HubEvent::Started(name("live/end"), Protocol::Rtmp)
        );
        assert_eq!(
            events.try_recv().unwrap(),
            HubEvent::Ended(name("live/end"))
        );
    }

    #[test]
    fn a_second_publisher_is_refused_by_default() {
        let hub = Hub::new(HubConfig::default());
        let _p = av_publisher(&hub, "live/busy");
        let e = hub
            .publish(name("live/busy"), Protocol::Whip, Instant::now())
            .err()
            .unwrap();
        assert_eq!(
            e,
            PublishError::Busy {
                name: name("live/busy"),
                by: Protocol::Rtmp
            }
        );
        assert!(e.to_string().contains("already being published"));
    }

    #[test]
    fn publishes_past_max_streams_are_refused() {
        let hub = Hub::new(HubConfig {
            max_streams: 2,
            ..HubConfig::default()
        });
        let now = Instant::now();
        let _a = hub.publish(name("live/a"), Protocol::Whip, now).unwrap();
        let _b = hub.publish(name("live/b"), Protocol::Whip, now).unwrap();
        let e = hub.publish(name("live/c"), Protocol::Whip, now).err();
        assert_eq!(e, Some(PublishError::TooMany(2)));
    }

    #[test]
    fn a_claim_without_media_does_not_hold_the_name() {
        let hub = Hub::new(HubConfig::default());
        let t0 = Instant::now();
        let squatter = hub.publish(name("live/sq"), Protocol::Whip, t0).unwrap();
        // Within the grace a real publisher still connecting keeps its name…
        assert!(
            hub.publish(
                name("live/sq"),
                Protocol::Whip,
                t0 + std::time::Duration::from_secs(1)
            )
            .is_err()
        );
        // …past it, a claim that never carried a frame gives way.
        let real = hub
            .publish(name("live/sq"), Protocol::Rtmp, t0 + SQUAT_GRACE)
            .expect("the squatted name is taken over");
        assert!(squatter.is_kicked());
        drop(real);
    }

    #[tokio::test]
    async fn takeover_kicks_the_first_publisher_and_ends_its_readers() {
        let hub = Hub::new(HubConfig {
            on_conflict: ConflictPolicy::Takeover,
            ..HubConfig::default()
        });
        let first = av_publisher(&hub, "live/t");
        let mut old_reader = hub.subscribe(&name("live/t"), Protocol::Whep).unwrap();
        let second = hub
            .publish(name("live/t"), Protocol::Whip, Instant::now())
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), first.kicked())
            .await
            .expect("the first publisher is told");
        first.push(frame(0, 0, true)); // goes nowhere
        assert!(matches!(old_reader.recv().await, Some(Item::Tracks(_))));
        assert!(old_reader.recv().await.is_none());
        drop(first); // must not remove the new stream
        let info = hub.stream(&name("live/t")).unwrap();
        assert_eq!(info.source, Protocol::Whip);
        drop(second);
        assert!(hub.stream(&name("live/t")).is_none());
    }

    #[test]
    fn readers_are_counted_by_protocol() {
        let hub = Hub::new(HubConfig::default());
        let p = av_publisher(&hub, "live/c");
        let a = hub.subscribe(&name("live/c"), Protocol::Whep).unwrap();
        let b = hub.subscribe(&name("live/c"), Protocol::Whep).unwrap();
        let c = hub.subscribe(&name("live/c"), Protocol::Hls).unwrap();
        p.push(frame(0, 0, true));
        let info = hub.stream(&name("live/c")).unwrap();
        assert_eq!(info.readers.get(&Protocol::Whep), Some(&2));
        assert_eq!(info.readers.get(&Protocol::Hls), Some(&1));
        assert_eq!((info.frames_in, info.bytes_in), (1, 10));
        drop((a, b, c));
        assert!(hub.stream(&name("live/c")).unwrap().readers.is_empty());
    }

    #[tokio::test]
    async fn watchers_count_and_an_uncounted_reader_reads_without_counting() {
        let hub = Hub::new(HubConfig::default());
        let p = av_publisher(&hub, "live/w");
        let mut feed = hub.subscribe_uncounted(&name("live/w")).unwrap();
        let w1 = hub.watch(&name("live/w"), Protocol::Whep).unwrap();
        let w2 = hub.watch(&name("live/w"), Protocol::Whep).unwrap();
        p.push(frame(0, 0, true));
        let readers = |hub: &Hub| hub.stream(&name("live/w")).unwrap().readers;
        assert_eq!(readers(&hub).get(&Protocol::Whep), Some(&2));
        assert_eq!(readers(&hub).len(), 1, "the feeding reader is not counted");
        assert!(matches!(feed.recv().await, Some(Item::Tracks(_))));
        assert!(matches!(feed.recv().await, Some(Item::Frame(_))));
        drop(w1);
        assert_eq!(readers(&hub).get(&Protocol::Whep), Some(&1));
        drop((w2, feed));
        assert!(readers(&hub).is_empty());
        drop(p);
        assert!(hub.watch(&name("live/w"), Protocol::Whep).is_none());
    }

    #[test]
    fn a_gop_over_the_byte_limit_is_not_cached() {
        let hub = Hub::new(HubConfig {
            max_gop_bytes: 25,
            ..HubConfig::default()
        });
        let p = av_publisher(&hub, "live/big");
        p.push(frame(0, 0, true));
        p.push(frame(0, 1, false));
        p.push(frame(0, 2, false)); // 30 bytes: over the limit
        let mut r = hub.subscribe(&name("live/big"), Protocol::Whep).unwrap();
        assert!(ready(&mut r).is_empty());
        p.push(frame(0, 3, true));
        assert_eq!(ready(&mut r), vec![(0, 3)]);
    }

    #[test]
    fn with_no_gop_cache_a_reader_starts_at_the_next_keyframe() {
        let hub = Hub::new(HubConfig {
            max_gop_bytes: 0,
            ..HubConfig::default()
        });
        let p = av_publisher(&hub, "live/lean");
        p.push(frame(0, 0, true));
        p.push(frame(0, 1, false));
        let mut r = hub.subscribe(&name("live/lean"), Protocol::Whep).unwrap();
        assert!(ready(&mut r).is_empty(), "nothing kept to replay");
        p.push(frame(0, 2, false));
        p.push(frame(0, 3, true));
        p.push(frame(0, 4, false));
        assert_eq!(ready(&mut r), vec![(0, 3), (0, 4)]);
    }
}
