//! The protocol messages: one per binary WebSocket message, a type byte then its fields.

use crate::{WireError, vlu};

/// Type bytes.
pub mod kind {
    /// Ping: the receiver answers [`PING_REPLY`] with the same bytes.
    pub const PING: u8 = 0x01;
    /// Ping reply.
    pub const PING_REPLY: u8 = 0x41;
    /// Set ack window (data sender to its receiver).
    pub const ACK_WINDOW: u8 = 0x0a;
    /// Open a send flow.
    pub const OPEN: u8 = 0x10;
    /// Open a send flow associated with one of the receiver's send flows.
    pub const OPEN_RETURN: u8 = 0x30;
    /// User data, the last (or only) fragment of a message.
    pub const DATA_LAST: u8 = 0x1d;
    /// User data, more fragments follow.
    pub const DATA_MORE: u8 = 0x3d;
    /// Abandon messages.
    pub const ABANDON: u8 = 0x1a;
    /// The sender closes the flow.
    pub const CLOSE: u8 = 0x1c;
    /// The receiver's data ack.
    pub const ACK: u8 = 0x5a;
    /// The receiver's close ack.
    pub const CLOSE_ACK: u8 = 0x5c;
    /// The receiver rejects the flow, or raises an exception on it.
    pub const EXCEPTION: u8 = 0x5e;
}

/// One protocol message, borrowing its bytes from the WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// `01 <bytes>`.
    Ping(&'a [u8]),
    /// `41 <bytes>`.
    PingReply(&'a [u8]),
    /// `0a <vlu ackWindow>`.
    AckWindow(u64),
    /// `10 <vlu flow> <metadata>`, or with `return_assoc`, `30 <vlu flow> <vlu assoc> <metadata>`.
    Open {
        /// The sender's flow ID.
        flow: u64,
        /// The receiver's own send flow this one answers.
        return_assoc: Option<u64>,
        /// What the flow carries, for the application.
        metadata: &'a [u8],
    },
    /// `1d`/`3d <vlu flow> <bytes>`: a fragment of a user message.
    Data {
        /// The flow.
        flow: u64,
        /// More fragments of this message follow (`3d`).
        more: bool,
        /// The fragment.
        data: &'a [u8],
    },
    /// `1a <vlu flow> [<vlu countMinusOne>]`.
    Abandon {
        /// The flow.
        flow: u64,
        /// Messages abandoned, at least 1.
        count: u64,
    },
    /// `1c <vlu flow>`.
    Close {
        /// The flow.
        flow: u64,
    },
    /// `5a <vlu flow> <vlu delta> <vlu advertisement>`.
    Ack {
        /// The flow (the sender's ID).
        flow: u64,
        /// Bytes newly received since the last ack.
        delta: u64,
        /// What the receiver can take beyond what it has acked.
        advertisement: u64,
    },
    /// `5c <vlu flow>`.
    CloseAck {
        /// The flow.
        flow: u64,
    },
    /// `5e <vlu flow> [<vlu code> [<text>]]`.
    Exception {
        /// The flow.
        flow: u64,
        /// The reason code, when given.
        code: Option<u64>,
        /// The reason, when given (UTF-8; a peer's invalid bytes are replaced).
        text: Option<&'a [u8]>,
    },
}

impl<'a> Message<'a> {
    /// Parses one WebSocket message. `Ok(None)` for a type byte this version does not know
    /// (ignored, as the protocol says); errors for a known type whose fields do not parse.
    pub fn parse(mut b: &'a [u8]) -> Result<Option<Message<'a>>, WireError> {
        let Some((&t, rest)) = b.split_first() else {
            return Err(WireError::Empty);
        };
        b = rest;
        let msg = match t {
            kind::PING => Message::Ping(b),
            kind::PING_REPLY => Message::PingReply(b),
            kind::ACK_WINDOW => Message::AckWindow(vlu::read(&mut b)?),
            kind::OPEN => Message::Open {
                flow: vlu::read(&mut b)?,
                return_assoc: None,
                metadata: b,
            },
            kind::OPEN_RETURN => Message::Open {
                flow: vlu::read(&mut b)?,
                return_assoc: Some(vlu::read(&mut b)?),
                metadata: b,
            },
            kind::DATA_LAST | kind::DATA_MORE => Message::Data {
                flow: vlu::read(&mut b)?,
                more: t == kind::DATA_MORE,
                data: b,
            },
            kind::ABANDON => {
                let flow = vlu::read(&mut b)?;
                let count = if b.is_empty() {
                    1
                } else {
                    vlu::read(&mut b)?
                        .checked_add(1)
                        .ok_or(WireError::VluTooLong)?
                };
                Message::Abandon { flow, count }
            }
            kind::CLOSE => Message::Close {
                flow: vlu::read(&mut b)?,
            },
            kind::ACK => Message::Ack {
                flow: vlu::read(&mut b)?,
                delta: vlu::read(&mut b)?,
                advertisement: vlu::read(&mut b)?,
            },
            kind::CLOSE_ACK => Message::CloseAck {
                flow: vlu::read(&mut b)?,
            },
            kind::EXCEPTION => {
                let flow = vlu::read(&mut b)?;
                let code = if b.is_empty() {
                    None
                } else {
                    Some(vlu::read(&mut b)?)
                };
                let text = (code.is_some() && !b.is_empty()).then_some(b);
                Message::Exception { flow, code, text }
            }
            _ => return Ok(None),
        };
        Ok(Some(msg))
    }

    /// Appends the message's bytes to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        match *self {
            Message::Ping(b) => {
                out.push(kind::PING);
                out.extend_from_slice(b);
            }
            Message::PingReply(b) => {
                out.push(kind::PING_REPLY);
                out.extend_from_slice(b);
            }
            Message::AckWindow(w) => {
                out.push(kind::ACK_WINDOW);
                vlu::write(w, out);
            }
            Message::Open {
                flow,
                return_assoc,
                metadata,
            } => {
                match return_assoc {
                    None => {
                        out.push(kind::OPEN);
                        vlu::write(flow, out);
                    }
                    Some(a) => {
                        out.push(kind::OPEN_RETURN);
                        vlu::write(flow, out);
                        vlu::write(a, out);
                    }
                }
                out.extend_from_slice(metadata);
            }
            Message::Data { flow, more, data } => {
                out.push(if more {
                    kind::DATA_MORE
                } else {
                    kind::DATA_LAST
                });
                vlu::write(flow, out);
                out.extend_from_slice(data);
            }
            Message::Abandon { flow, count } => {
                out.push(kind::ABANDON);
                vlu::write(flow, out);
                // One is the default and goes without a count.
                if count > 1 {
                    vlu::write(count - 1, out);
                }
            }
            Message::Close { flow } => {
                out.push(kind::CLOSE);
                vlu::write(flow, out);
            }
            Message::Ack {
                flow,
                delta,
                advertisement,
            } => {
                out.push(kind::ACK);
                vlu::write(flow, out);
                vlu::write(delta, out);
                vlu::write(advertisement, out);
            }
            Message::CloseAck { flow } => {
                out.push(kind::CLOSE_ACK);
                vlu::write(flow, out);
            }
            Message::Exception { flow, code, text } => {
                out.push(kind::EXCEPTION);
                vlu::write(flow, out);
                if let Some(c) = code {
                    vlu::write(c, out);
                    if let Some(t) = text {
                        out.extend_from_slice(t);
                    }
                }
            }
        }
    }

    /// The message's bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }
}

/// Bytes of a data message's header (type byte and flow ID): flow control counts them.
pub fn data_header_len(flow: u64) -> usize {
    1 + vlu::len(flow)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message type, its bytes written out by hand from the spec's table.
    fn vectors() -> Vec<(Message<'static>, Vec<u8>)> {
        vec![
            (Message::Ping(b"\x01\x02"), vec![0x01, 0x01, 0x02]),
            (Message::PingReply(b"\x01\x02"), vec![0x41, 0x01, 0x02]),
            (Message::AckWindow(2800), vec![0x0a, 0x95, 0x70]),
            (
                Message::Open {
                    flow: 0,
                    return_assoc: None,
                    metadata: b"TC\x04\x00",
                },
                vec![0x10, 0x00, 0x54, 0x43, 0x04, 0x00],
            ),
            (
                Message::Open {
                    flow: 3,
                    return_assoc: Some(0),
                    metadata: b"TC\x04\x01",
                },
                vec![0x30, 0x03, 0x00, 0x54, 0x43, 0x04, 0x01],
            ),
            (
                Message::Data {
                    flow: 200,
                    more: false,
                    data: b"hi",
                },
                vec![0x1d, 0x81, 0x48, b'h', b'i'],
            ),
            (
                Message::Data {
                    flow: 1,
                    more: true,
                    data: b"",
                },
                vec![0x3d, 0x01],
            ),
            (Message::Abandon { flow: 2, count: 1 }, vec![0x1a, 0x02]),
            (
                Message::Abandon { flow: 2, count: 5 },
                vec![0x1a, 0x02, 0x04],
            ),
            (Message::Close { flow: 7 }, vec![0x1c, 0x07]),
            (
                Message::Ack {
                    flow: 1,
                    delta: 2800,
                    advertisement: 2_097_151,
                },
                vec![0x5a, 0x01, 0x95, 0x70, 0xff, 0xff, 0x7f],
            ),
            (Message::CloseAck { flow: 1 }, vec![0x5c, 0x01]),
            (
                Message::Exception {
                    flow: 4,
                    code: None,
                    text: None,
                },
                vec![0x5e, 0x04],
            ),
            (
                Message::Exception {
                    flow: 4,
                    code: Some(2),
                    text: Some(b"no"),
                },
                vec![0x5e, 0x04, 0x02, b'n', b'o'],
            ),
        ]
    }

    #[test]
    fn every_message_type_byte_for_byte_both_ways() {
        for (msg, bytes) in vectors() {
            assert_eq!(msg.to_vec(), bytes, "{msg:?}");
            assert_eq!(
                Message::parse(&bytes),
                Ok(Some(msg.clone())),
                "{bytes:02x?}"
            );
        }
        // An abandon may spell out a count of one.
        assert_eq!(
            Message::parse(&[0x1a, 0x02, 0x00]),
            Ok(Some(Message::Abandon { flow: 2, count: 1 }))
        );
    }

    #[test]
    fn unknown_types_are_ignored_and_broken_fields_are_errors() {
        assert_eq!(Message::parse(&[0x77, 1, 2]), Ok(None));
        assert_eq!(Message::parse(&[]), Err(WireError::Empty));
        assert_eq!(Message::parse(&[0x1d]), Err(WireError::VluTruncated));
        assert_eq!(
            Message::parse(&[0x5a, 0x01, 0x95]),
            Err(WireError::VluTruncated)
        );
        assert_eq!(
            Message::parse(&[0x0a, 0xff, 0xff]),
            Err(WireError::VluTruncated)
        );
        assert_eq!(
            Message::parse(&[
                0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ]),
            Err(WireError::VluTooLong)
        );
        // Truncating any valid message never panics.
        for (_, bytes) in vectors() {
            for n in 0..bytes.len() {
                let _ = Message::parse(&bytes[..n]);
            }
        }
    }
}
