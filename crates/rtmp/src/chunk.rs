//! Incoming RTMP chunk stream → messages (RTMP spec 1.0, section 5.3), with hard limits.
//!
//! rml_rtmp has a chunk deserializer, but it keeps one partial payload for all chunk streams
//! (interleaved messages underflow a length subtraction), reserves a whole announced message up
//! front and takes any chunk size. A client controls all of these, so the reader is ours.

use std::collections::HashMap;

use crate::RtmpError;

/// Limits the reader enforces; copied from [`crate::SessionConfig`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_chunk_size: u32,
    pub max_message_size: u32,
    pub max_chunk_streams: usize,
    pub max_buffered_bytes: usize,
}

/// One complete message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub type_id: u8,
    /// Milliseconds, as the client sent it (wraps at 2^32).
    pub timestamp: u32,
    pub stream_id: u32,
    pub payload: Vec<u8>,
}

/// What the previous chunk on one chunk stream left behind, for compressed headers.
#[derive(Debug, Default)]
struct ChunkStream {
    timestamp: u32,
    /// The last timestamp field (absolute for type 0, delta otherwise), reused by type 3 chunks
    /// that start a new message, as FFmpeg and librtmp do.
    timestamp_field: u32,
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// The message being assembled; empty between messages.
    partial: Vec<u8>,
}

/// Incoming chunk stream parser. Hand it each read with [`ChunkReader::next_message`], called
/// until `None`; apply SetChunkSize before the next call.
#[derive(Debug)]
pub(crate) struct ChunkReader {
    limits: Limits,
    chunk_size: u32,
    /// The start of a chunk whose rest has not arrived yet. Chunks are parsed straight from
    /// each read and their bodies copied once, into their message; only a chunk a read ends
    /// inside is copied here, and it is topped up from the next read with just the bytes it
    /// lacks, so this holds one chunk at most, whatever the read size.
    held: Vec<u8>,
    streams: HashMap<u32, ChunkStream>,
    /// Sum of `partial.capacity()` over all chunk streams: what the partial messages hold,
    /// counted as allocated, so the buffer limit bounds memory and not just bytes received.
    partial_bytes: usize,
}

/// What [`ChunkReader::read_chunk`] found at the front of its input.
enum Parsed {
    /// Less than a chunk. `chunk_len` is its whole length once its header is there.
    Short { chunk_len: Option<usize> },
    /// One chunk, `used` bytes, and the message it completed, if any.
    Chunk {
        used: usize,
        message: Option<Message>,
    },
}

/// Until the client says otherwise (RTMP spec 5.4.1).
const INITIAL_CHUNK_SIZE: u32 = 128;
const EXTENDED_TIMESTAMP: u32 = 0xff_ffff;
/// The longest chunk header: a 3-byte basic header, 11 bytes of type 0, an extended timestamp.
const MAX_HEADER: usize = 3 + 11 + 4;

impl ChunkReader {
    pub fn new(limits: Limits) -> ChunkReader {
        ChunkReader {
            limits,
            chunk_size: INITIAL_CHUNK_SIZE,
            held: Vec::new(),
            streams: HashMap::new(),
            partial_bytes: 0,
        }
    }

    /// Bytes held: the start of a chunk plus partial messages.
    pub fn buffered(&self) -> usize {
        self.held.len() + self.partial_bytes
    }

    /// Keeps bytes of a chunk until its rest arrives; fails past the buffer limit.
    fn hold(&mut self, bytes: &[u8]) -> Result<(), RtmpError> {
        if self.buffered() + bytes.len() > self.limits.max_buffered_bytes {
            return Err(RtmpError::BufferLimit {
                limit: self.limits.max_buffered_bytes,
            });
        }
        self.held.extend_from_slice(bytes);
        Ok(())
    }

    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), RtmpError> {
        // Zero would make chunks that carry nothing: a message would never complete.
        if size == 0 || size > self.limits.max_chunk_size {
            return Err(RtmpError::BadChunkSize {
                size,
                limit: self.limits.max_chunk_size,
            });
        }
        self.chunk_size = size;
        Ok(())
    }

    /// Abort message (type 2): drop the partial message on `csid`.
    pub fn abort(&mut self, csid: u32) {
        if let Some(stream) = self.streams.get_mut(&csid) {
            self.partial_bytes -= stream.partial.capacity();
            stream.partial = Vec::new();
        }
    }

    /// The next complete message from what is held and `data`, bytes just read. Parsed bytes
    /// are taken off the front of `data`; `None` once all of it is parsed or held.
    pub fn next_message(&mut self, data: &mut &[u8]) -> Result<Option<Message>, RtmpError> {
        loop {
            if self.held.is_empty() {
                match self.read_chunk(data)? {
                    Parsed::Chunk { used, message } => {
                        *data = &data[used..];
                        if message.is_some() {
                            return Ok(message);
                        }
                    }
                    Parsed::Short { .. } => {
                        self.hold(data)?;
                        *data = &[];
                        return Ok(None);
                    }
                }
                continue;
            }
            // A chunk began in an earlier read. Taken out so it can be parsed while `self`
            // changes; put back below.
            let held = std::mem::take(&mut self.held);
            let parsed = self.read_chunk(&held);
            self.held = held;
            match parsed? {
                Parsed::Chunk { used, message } => {
                    self.held.drain(..used);
                    if message.is_some() {
                        return Ok(message);
                    }
                }
                Parsed::Short { .. } if data.is_empty() => return Ok(None),
                Parsed::Short { chunk_len } => {
                    // Just what it lacks: the rest of the header (perhaps a few body bytes
                    // past a short one: they are parsed from here too), or of the chunk.
                    let lacks = match chunk_len {
                        Some(len) => len - self.held.len(),
                        None => MAX_HEADER.saturating_sub(self.held.len()).max(1),
                    };
                    let (top_up, rest) = data.split_at(lacks.min(data.len()));
                    self.hold(top_up)?;
                    *data = rest;
                }
            }
        }
    }

    /// Parses one whole chunk from the front of `buf`. Nothing changes until the whole chunk
    /// is there.
    fn read_chunk(&mut self, buf: &[u8]) -> Result<Parsed, RtmpError> {
        let mut r = Reader { buf, pos: 0 };
        let Some(first) = r.u8() else {
            return Ok(Parsed::Short { chunk_len: None });
        };
        let fmt = first >> 6;
        let csid = match first & 0x3f {
            0 => match r.u8() {
                Some(b) => 64 + u32::from(b),
                None => return Ok(Parsed::Short { chunk_len: None }),
            },
            1 => match r.u16_le() {
                Some(v) => 64 + u32::from(v),
                None => return Ok(Parsed::Short { chunk_len: None }),
            },
            id => u32::from(id),
        };
        let header_len = match fmt {
            0 => 11,
            1 => 7,
            2 => 3,
            _ => 0,
        };
        let Some(header) = r.take(header_len) else {
            return Ok(Parsed::Short { chunk_len: None });
        };

        if !self.streams.contains_key(&csid) {
            if fmt != 0 {
                return Err(RtmpError::BadChunk(
                    "a compressed chunk header on a chunk stream with no message before it",
                ));
            }
            if self.streams.len() >= self.limits.max_chunk_streams {
                return Err(RtmpError::TooManyChunkStreams {
                    limit: self.limits.max_chunk_streams,
                });
            }
        }
        // Work on a copy: nothing may change until the whole chunk is here.
        let mut s = match self.streams.get(&csid) {
            Some(prev) => ChunkStream {
                partial: Vec::new(),
                ..*prev
            },
            None => ChunkStream::default(),
        };
        let prev_partial = self.streams.get(&csid).map_or(0, |p| p.partial.len());
        if fmt != 3 && prev_partial > 0 {
            return Err(RtmpError::BadChunk(
                "a new message header arrived before the previous message on its chunk stream was complete",
            ));
        }

        if fmt < 3 {
            s.timestamp_field = be24(&header[0..3]);
            s.extended = s.timestamp_field == EXTENDED_TIMESTAMP;
        }
        if fmt < 2 {
            s.length = be24(&header[3..6]);
            s.type_id = header[6];
        }
        if fmt == 0 {
            s.stream_id = u32::from_le_bytes([header[7], header[8], header[9], header[10]]);
        }
        if s.extended {
            // Type 3 chunks repeat the extended field when their stream's header had one.
            match r.u32_be() {
                Some(ext) if fmt < 3 => s.timestamp_field = ext,
                Some(_) => {}
                None => return Ok(Parsed::Short { chunk_len: None }),
            }
        }
        let starts_message = prev_partial == 0;
        if starts_message {
            s.timestamp = match fmt {
                0 => s.timestamp_field,
                _ => s.timestamp.wrapping_add(s.timestamp_field),
            };
        }

        if s.length > self.limits.max_message_size {
            return Err(RtmpError::MessageTooLarge {
                size: s.length,
                limit: self.limits.max_message_size,
            });
        }
        let remaining = (s.length as usize).saturating_sub(prev_partial);
        let body_len = remaining.min(self.chunk_size as usize);
        let Some(body) = r.take(body_len) else {
            return Ok(Parsed::Short {
                chunk_len: Some(r.pos + body_len),
            });
        };

        // The whole chunk is here: commit.
        let mut partial = self
            .streams
            .remove(&csid)
            .map(|p| p.partial)
            .unwrap_or_default();
        self.partial_bytes -= partial.capacity();
        grow_within(&mut partial, body.len(), s.length as usize);
        partial.extend_from_slice(body);
        let complete = partial.len() == s.length as usize;
        let message = if complete {
            Some(Message {
                type_id: s.type_id,
                timestamp: s.timestamp,
                stream_id: s.stream_id,
                payload: std::mem::take(&mut partial),
            })
        } else {
            self.partial_bytes += partial.capacity();
            if self.buffered() > self.limits.max_buffered_bytes {
                return Err(RtmpError::BufferLimit {
                    limit: self.limits.max_buffered_bytes,
                });
            }
            None
        };
        s.partial = partial;
        self.streams.insert(csid, s);
        Ok(Parsed::Chunk {
            used: r.pos,
            message,
        })
    }
}

/// Makes room for `more` bytes in a message being assembled. Grown as chunks arrive, never
/// reserved from the announced length (a client that announces 4 MiB and sends one chunk must
/// not make the server hold 4 MiB), but geometrically, as `Vec` grows, for few reallocations;
/// unlike `Vec`'s own growth, never past the announced length, so a finished message carries
/// no slack and a partial one holds at most twice what has arrived.
fn grow_within(partial: &mut Vec<u8>, more: usize, announced: usize) {
    let needed = partial.len() + more;
    if needed <= partial.capacity() {
        return;
    }
    let target = (partial.capacity() * 2)
        .max(needed)
        .min(announced.max(needed));
    partial.reserve_exact(target - partial.len());
}

fn be24(b: &[u8]) -> u32 {
    (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
}

/// A cursor that answers `None` at the end instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16_le(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32_be(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_chunk_size: 1 << 16,
            max_message_size: 1 << 16,
            max_chunk_streams: 4,
            max_buffered_bytes: 1 << 17,
        }
    }

    fn read_all(reader: &mut ChunkReader, mut bytes: &[u8]) -> Result<Vec<Message>, RtmpError> {
        let mut out = Vec::new();
        while let Some(m) = reader.next_message(&mut bytes)? {
            out.push(m);
        }
        assert!(bytes.is_empty(), "every byte parsed or held");
        Ok(out)
    }

    #[test]
    fn header_types_and_split_messages() {
        let mut r = ChunkReader::new(limits());
        // Type 0, csid 4, ts 1000, length 130 (two chunks at size 128), type 9, stream 1.
        let mut bytes = vec![0x04, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x82, 0x09, 1, 0, 0, 0];
        bytes.extend([0xaa; 128]);
        bytes.extend([0xc4, 0xbb, 0xbb]); // type 3 continuation
        // Type 2 on csid 4: delta 40, same length/type: a new message at 1040.
        bytes.extend([0x84, 0x00, 0x00, 0x28]);
        bytes.extend([0xcc; 128]);
        bytes.extend([0xc4, 0xdd, 0xdd]);
        // Type 3 starting a message: repeats the delta (1080).
        bytes.extend([0xc4]);
        bytes.extend([0xee; 128]);
        bytes.extend([0xc4, 0xff, 0xff]);
        // Feed one byte at a time: the parse must not depend on read boundaries.
        let mut got = Vec::new();
        for b in &bytes {
            got.extend(read_all(&mut r, &[*b]).unwrap());
        }
        let ts: Vec<u32> = got.iter().map(|m| m.timestamp).collect();
        assert_eq!(ts, vec![1000, 1040, 1080]);
        assert!(
            got.iter()
                .all(|m| m.type_id == 9 && m.stream_id == 1 && m.payload.len() == 130)
        );
        assert_eq!(&got[0].payload[126..], &[0xaa, 0xaa, 0xbb, 0xbb]);
        assert_eq!(r.buffered(), 0);
    }

    /// Many messages in one read, and reads that end anywhere: the same messages, whole, and
    /// nothing left held once all is parsed.
    #[test]
    fn messages_are_the_same_however_the_reads_fall() {
        let mut bytes = Vec::new();
        for i in 0..20u8 {
            // Type 0 on csid 4, length 300 (three chunks at 128), then a one-chunk message
            // on csid 5.
            bytes.extend([0x04, 0, 0, i, 0x00, 0x01, 0x2c, 9, 1, 0, 0, 0]);
            bytes.extend([i; 128]);
            bytes.extend([0xc4]);
            bytes.extend([i; 128]);
            bytes.extend([0xc4]);
            bytes.extend([i; 44]);
            bytes.extend([0x05, 0, 0, i, 0, 0, 3, 8, 1, 0, 0, 0, i, i, i]);
        }
        let whole = read_all(&mut ChunkReader::new(limits()), &bytes).unwrap();
        assert_eq!(whole.len(), 40);
        for step in [1, 7, 128, 141, 1000, 4096] {
            let mut r = ChunkReader::new(limits());
            let mut got = Vec::new();
            for piece in bytes.chunks(step) {
                got.extend(read_all(&mut r, piece).unwrap());
            }
            assert_eq!(got, whole, "reads of {step} bytes");
            assert_eq!(
                r.buffered(),
                0,
                "reads of {step} bytes: nothing held at the end"
            );
        }
        assert!(
            whole
                .iter()
                .all(|m| m.payload.len() == if m.type_id == 9 { 300 } else { 3 })
        );
    }

    /// Random messages on interleaved chunk streams, some with extended timestamps, cut into
    /// random reads: the messages come out whole and in order, whatever the cuts (the held
    /// chunk is topped up across every kind of boundary: inside a basic header, an extended
    /// timestamp, a body, and past the end of a chunk shorter than the longest header).
    #[test]
    fn random_reads_of_random_messages() {
        // xorshift: repeatable without a dependency.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..50 {
            let mut bytes = Vec::new();
            let mut expected = Vec::new();
            // One message at a time per chunk stream, as a client sends them; other streams'
            // whole messages go between a message's chunks.
            for _ in 0..30 {
                let csid = 2 + rand(3) as u8;
                let len = rand(400) as usize;
                let ts = if rand(4) == 0 {
                    0x0100_0000 + rand(1000) as u32
                } else {
                    rand(0xff_0000) as u32
                };
                let body: Vec<u8> = (0..len).map(|_| rand(256) as u8).collect();
                let extended = ts >= EXTENDED_TIMESTAMP;
                let mut header = vec![csid];
                header.extend(&ts.min(EXTENDED_TIMESTAMP).to_be_bytes()[1..]);
                header.extend(&(len as u32).to_be_bytes()[1..]);
                header.extend([9, 1, 0, 0, 0]);
                if extended {
                    header.extend(ts.to_be_bytes());
                }
                bytes.extend(&header);
                let mut chunks = body.chunks(128);
                bytes.extend(chunks.next().unwrap_or_default());
                for c in chunks {
                    if rand(3) == 0 {
                        // A one-byte audio message on csid 7 between two chunks.
                        bytes.extend([0x07, 0, 0, 1, 0, 0, 1, 8, 1, 0, 0, 0, 0x55]);
                        expected.push((8, 1, vec![0x55]));
                    }
                    bytes.push(0xc0 | csid);
                    if extended {
                        bytes.extend(ts.to_be_bytes());
                    }
                    bytes.extend(c);
                }
                expected.push((9, ts, body));
            }
            let mut r = ChunkReader::new(limits());
            let mut got = Vec::new();
            let mut rest = bytes.as_slice();
            while !rest.is_empty() {
                let (read, after) = rest.split_at((1 + rand(300) as usize).min(rest.len()));
                got.extend(read_all(&mut r, read).unwrap());
                rest = after;
            }
            let got: Vec<_> = got
                .into_iter()
                .map(|m| (m.type_id, m.timestamp, m.payload))
                .collect();
            assert_eq!(got, expected, "round {round}");
            assert_eq!(r.buffered(), 0, "round {round}");
        }
    }

    /// A message announced long and sent one chunk at a time holds what has arrived, not what
    /// was announced (a client could otherwise make the server hold 64 KiB, or with real limits
    /// 4 MiB, for every 140 bytes it sends).
    #[test]
    fn an_announced_length_alone_reserves_nothing() {
        let mut r = ChunkReader::new(limits());
        // Type 0, csid 4, length 0xfff0 (the limit allows 64 KiB), one 128-byte chunk of it.
        let mut bytes = vec![0x04, 0, 0, 0, 0x00, 0xff, 0xf0, 9, 1, 0, 0, 0];
        bytes.extend([1; 128]);
        assert!(read_all(&mut r, &bytes).unwrap().is_empty());
        assert_eq!(r.buffered(), 128);
        let held = r.streams.get(&4).map_or(0, |s| s.partial.capacity());
        assert!(held < 1024, "{held} bytes held for 128 received");
    }

    /// A message grows geometrically as its chunks come, but never past its announced length:
    /// finished, its payload is exactly its length; unfinished, what it holds is at most twice
    /// what has arrived, and the buffer limit counts what is allocated, not only what arrived.
    #[test]
    fn messages_grow_within_their_length_and_the_limit_counts_their_room() {
        let mut r = ChunkReader::new(limits());
        // 1,000 bytes announced, in chunks of 128: 7 chunks of 128 and one of 104.
        let mut bytes = vec![0x04, 0, 0, 0, 0x00, 0x03, 0xe8, 9, 1, 0, 0, 0];
        let mut left = 1000usize;
        loop {
            let n = left.min(128);
            bytes.extend(std::iter::repeat_n(5u8, n));
            left -= n;
            if left == 0 {
                break;
            }
            bytes.push(0xc4);
        }
        // Fed a chunk at a time, the room held is never more than twice what arrived.
        let mut got = Vec::new();
        for piece in bytes.chunks(129) {
            got.extend(read_all(&mut r, piece).unwrap());
            let partial = r.streams.get(&4).map_or(0, |s| s.partial.len());
            assert!(
                r.partial_bytes <= 2 * partial.max(1),
                "{} for {partial}",
                r.partial_bytes
            );
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload.len(), 1000);
        assert_eq!(
            got[0].payload.capacity(),
            1000,
            "no slack past the announced length"
        );
        assert_eq!(r.buffered(), 0);

        // 75,000 bytes arrived of a 100,000-byte message in chunks of 25,000 take 100,000 bytes
        // of room (25,000, 50,000, then doubled up to the length): over a limit of 96 KiB that
        // the 75,000 alone would pass.
        let mut r = ChunkReader::new(Limits {
            max_message_size: 1 << 20,
            max_chunk_size: 1 << 20,
            max_buffered_bytes: 96 * 1024,
            ..limits()
        });
        r.set_chunk_size(25_000).unwrap();
        let mut bytes = vec![0x04, 0, 0, 0, 0x01, 0x86, 0xa0, 9, 1, 0, 0, 0];
        bytes.extend([0; 25_000]);
        for _ in 0..2 {
            bytes.push(0xc4);
            bytes.extend([0; 25_000]);
        }
        assert_eq!(
            read_all(&mut r, &bytes).unwrap_err(),
            RtmpError::BufferLimit { limit: 96 * 1024 }
        );
    }

    #[test]
    fn extended_timestamps_and_long_csids() {
        let mut r = ChunkReader::new(limits());
        // csid 64 + 300 = 364 (3-byte form: 1, lo, hi), ts 0x01000000 extended.
        let mut bytes = vec![0x01, 0x2c, 0x01, 0xff, 0xff, 0xff, 0, 0, 1, 8, 1, 0, 0, 0];
        bytes.extend([0x01, 0x00, 0x00, 0x00, 0x42]);
        let got = read_all(&mut r, &bytes).unwrap();
        assert_eq!(got[0].timestamp, 0x0100_0000);
        assert_eq!(got[0].payload, vec![0x42]);
    }

    #[test]
    fn interleaved_chunk_streams() {
        let mut r = ChunkReader::new(limits());
        let mut bytes = vec![0x04, 0, 0, 0, 0, 0, 0x82, 9, 1, 0, 0, 0];
        bytes.extend([1; 128]);
        // A whole audio message on csid 5 between the two chunks of the video message.
        bytes.extend([0x05, 0, 0, 5, 0, 0, 2, 8, 1, 0, 0, 0, 7, 7]);
        bytes.extend([0xc4, 2, 2]);
        let got = read_all(&mut r, &bytes).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].type_id, got[0].payload.len()), (8, 2));
        assert_eq!((got[1].type_id, got[1].payload.len()), (9, 130));
    }

    #[test]
    fn limits_are_errors() {
        let mut r = ChunkReader::new(limits());
        assert_eq!(
            r.set_chunk_size(0),
            Err(RtmpError::BadChunkSize {
                size: 0,
                limit: 1 << 16
            })
        );
        assert!(r.set_chunk_size(0x7fff_ffff).is_err());
        // Message length 0xffffff > 64 KiB.
        let err = read_all(&mut r, &[0x04, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "RTMP message of 16777215 bytes exceeds the limit of 65536 bytes"
        );

        let mut r = ChunkReader::new(limits());
        let err = read_all(&mut r, &[0xc7, 0x00]).unwrap_err();
        assert!(matches!(err, RtmpError::BadChunk(_)), "{err}");

        let mut r = ChunkReader::new(limits());
        let mut bytes = Vec::new();
        for csid in 2..10u8 {
            bytes.extend([csid, 0, 0, 0, 0, 0, 1, 9, 1, 0, 0, 0, 0]);
        }
        assert_eq!(
            read_all(&mut r, &bytes).unwrap_err(),
            RtmpError::TooManyChunkStreams { limit: 4 }
        );

        // Partial messages on every chunk stream together: 3 × 40,000 bytes fit in 128 KiB,
        // a fourth does not.
        let mut r = ChunkReader::new(limits());
        r.set_chunk_size(40_000).unwrap();
        let mut bytes = Vec::new();
        for csid in 2..6u8 {
            bytes.extend([csid, 0, 0, 0, 0x00, 0xff, 0xff, 9, 1, 0, 0, 0]);
            bytes.extend([0; 40_000]);
        }
        assert_eq!(
            read_all(&mut r, &bytes).unwrap_err(),
            RtmpError::BufferLimit { limit: 1 << 17 }
        );
    }

    /// A read that ends inside a chunk leaves just that chunk's start held, and the next read
    /// adds only what the chunk lacks: what is held never grows with the read size.
    #[test]
    fn what_is_held_is_one_chunk_at_most() {
        let mut r = ChunkReader::new(limits());
        r.set_chunk_size(4096).unwrap();
        let mut bytes = Vec::new();
        for i in 0..8u8 {
            // Type 0 on csid 6, a 10,000-byte message: chunks of 4096, 4096 and 1808.
            bytes.extend([0x06, 0, 0, i, 0x00, 0x27, 0x10, 9, 1, 0, 0, 0]);
            bytes.extend([i; 4096]);
            bytes.extend([0xc6]);
            bytes.extend([i; 4096]);
            bytes.extend([0xc6]);
            bytes.extend([i; 1808]);
        }
        let mut got = Vec::new();
        let mut most_held = 0;
        // Reads of 16 KiB ending anywhere, as a socket gives them.
        for piece in bytes.chunks(16_000) {
            got.extend(read_all(&mut r, piece).unwrap());
            most_held = most_held.max(r.held.capacity());
        }
        assert_eq!(got.len(), 8);
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, m)| m.payload == vec![i as u8; 10_000])
        );
        // A Vec grows by doubling: one chunk's bytes may take twice their room, no more (the
        // reader held each whole 16 KiB read before).
        assert!(
            most_held <= 2 * (4096 + MAX_HEADER),
            "{most_held} bytes held for 4 KiB chunks"
        );
    }

    #[test]
    fn new_header_mid_message_is_an_error_and_abort_clears() {
        let mut r = ChunkReader::new(limits());
        let mut bytes = vec![0x04, 0, 0, 0, 0, 0, 0x82, 9, 1, 0, 0, 0];
        bytes.extend([1; 128]);
        assert!(read_all(&mut r, &bytes).unwrap().is_empty());
        assert_eq!(r.buffered(), 128);
        r.abort(4);
        assert_eq!(r.buffered(), 0);
        // After the abort a fresh message on csid 4 is fine.
        let got = read_all(&mut r, &[0x44, 0, 0, 1, 0, 0, 1, 9, 0x33]).unwrap();
        assert_eq!(got[0].payload, vec![0x33]);

        let mut r = ChunkReader::new(limits());
        read_all(&mut r, &bytes).unwrap();
        let err = read_all(&mut r, &[0x44, 0, 0, 1, 0, 0, 1, 9, 0x33]).unwrap_err();
        assert!(matches!(err, RtmpError::BadChunk(_)), "{err}");
    }
}
