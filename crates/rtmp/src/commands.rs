//! NetConnection/NetStream commands (RTMP spec 7.2) as a publisher sends them, and the
//! replies FFmpeg, OBS and librtmp wait for. Outgoing messages are encoded by rml_rtmp.

use std::collections::HashMap;

use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::messages::{PeerBandwidthLimitType, RtmpMessage, UserControlEventType};
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::time::RtmpTimestamp;
use tracing::debug;

use crate::amf0::Command;
use crate::session::{Publish, RequestId, State};
use crate::{Event, RtmpError, Session};

/// A publisher needs one stream; a few more tolerate clients that retry.
pub(crate) const MAX_STREAMS: u32 = 8;

impl Session {
    pub(crate) fn command(&mut self, stream_id: u32, payload: &[u8]) -> Result<(), RtmpError> {
        let cmd = Command::decode(payload)?;
        let app = match (&self.state, cmd.name.as_str()) {
            (State::New, "connect") => return self.connect(&cmd),
            (State::Connected { .. }, "connect") => {
                return Err(RtmpError::Protocol("a second connect on one connection"));
            }
            (State::New, "createStream" | "publish" | "play") => {
                return Err(RtmpError::Protocol("a stream command before connect"));
            }
            (State::New, _) => {
                debug!(command = cmd.name, "command before connect ignored");
                return Ok(());
            }
            (State::Connected { app }, _) => app.clone(),
        };
        match cmd.name.as_str() {
            "createStream" => {
                if self.streams_created >= MAX_STREAMS {
                    return Err(RtmpError::TooManyStreams { limit: MAX_STREAMS });
                }
                self.streams_created += 1;
                let id = f64::from(self.streams_created);
                self.replies.result(cmd.transaction, Amf0Value::Number(id))
            }
            // FFmpeg and OBS send these before createStream; they only want an answer.
            "releaseStream" | "FCPublish" if cmd.transaction != 0.0 => {
                self.replies.result(cmd.transaction, Amf0Value::Undefined)
            }
            "publish" => self.publish(app, stream_id, &cmd),
            "play" | "play2" => self.replies.play_refused(stream_id),
            "FCUnpublish" => {
                self.end_publish();
                Ok(())
            }
            "closeStream" => {
                if self
                    .publish
                    .as_ref()
                    .is_some_and(|p| p.stream_id == stream_id)
                {
                    self.end_publish();
                }
                Ok(())
            }
            "deleteStream" => {
                let id = cmd.number_arg(0);
                if self
                    .publish
                    .as_ref()
                    .is_some_and(|p| Some(f64::from(p.stream_id)) == id)
                {
                    self.end_publish();
                }
                Ok(())
            }
            other => {
                debug!(command = other, "rtmp command ignored");
                Ok(())
            }
        }
    }

    fn connect(&mut self, cmd: &Command) -> Result<(), RtmpError> {
        let Some(Amf0Value::Utf8String(app)) = cmd.property("app") else {
            self.replies
                .connect_refused(cmd.transaction, "connect needs an app name")?;
            return Err(RtmpError::Protocol("connect without an app name"));
        };
        // Some clients end the app with '/' (rtmp://host/live//key).
        let app = app.strip_suffix('/').unwrap_or(app);
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if app.is_empty() || !app.chars().all(allowed) {
            self.replies.connect_refused(
                cmd.transaction,
                "app names are letters, digits, '.', '_' and '-'",
            )?;
            return Err(RtmpError::BadAppName(app.to_string()));
        }
        let encoding = match cmd.property("objectEncoding") {
            Some(Amf0Value::Number(n)) => *n,
            _ => 0.0,
        };
        self.replies.connect_ok(cmd.transaction, encoding)?;
        self.state = State::Connected {
            app: app.to_string(),
        };
        Ok(())
    }

    fn publish(&mut self, app: String, stream_id: u32, cmd: &Command) -> Result<(), RtmpError> {
        if stream_id == 0 || stream_id > self.streams_created {
            return Err(RtmpError::Protocol(
                "publish on a stream that was not created",
            ));
        }
        let Some(key) = cmd.string_arg(0) else {
            return Err(RtmpError::BadMessage("publish without a stream name"));
        };
        if self.publish.is_some() {
            return Err(RtmpError::Protocol("a second publish on one connection"));
        }
        let request = RequestId(self.next_request);
        self.next_request = self.next_request.wrapping_add(1);
        self.publish = Some(Publish {
            request,
            stream_id,
            key: key.to_string(),
            ingest: None,
        });
        self.emit(Event::PublishRequested {
            request,
            app,
            key: key.to_string(),
        });
        Ok(())
    }

    /// Ends the publish; the server hears of it only if it had accepted it.
    fn end_publish(&mut self) {
        if let Some(Publish {
            ingest: Some(_), ..
        }) = self.publish.take()
        {
            self.emit(Event::PublishEnded);
        }
    }
}

/// Outgoing messages, encoded and queued until the session flushes them.
pub(crate) struct Replies {
    serializer: ChunkSerializer,
    chunk_size: u32,
    window_ack_size: u32,
    queued: Vec<Vec<u8>>,
}

impl Replies {
    pub fn new(serializer: ChunkSerializer, chunk_size: u32, window_ack_size: u32) -> Replies {
        Replies {
            serializer,
            chunk_size,
            window_ack_size,
            queued: Vec::new(),
        }
    }

    pub fn take(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.queued)
    }

    pub fn raw(&mut self, bytes: Vec<u8>) {
        if !bytes.is_empty() {
            self.queued.push(bytes);
        }
    }

    /// Timestamps are 0: clients ignore them on control messages and we read no clock.
    fn send(&mut self, message: RtmpMessage, stream_id: u32) -> Result<(), RtmpError> {
        let payload = message
            .into_message_payload(RtmpTimestamp::new(0), stream_id)
            .map_err(|e| RtmpError::Encode(e.to_string()))?;
        let packet = self
            .serializer
            .serialize(&payload, false, false)
            .map_err(|e| RtmpError::Encode(e.to_string()))?;
        self.raw(packet.bytes);
        Ok(())
    }

    fn command(
        &mut self,
        name: &str,
        transaction: f64,
        args: Vec<Amf0Value>,
        stream_id: u32,
    ) -> Result<(), RtmpError> {
        let message = RtmpMessage::Amf0Command {
            command_name: name.to_string(),
            transaction_id: transaction,
            command_object: Amf0Value::Null,
            additional_arguments: args,
        };
        self.send(message, stream_id)
    }

    pub fn connect_ok(&mut self, transaction: f64, object_encoding: f64) -> Result<(), RtmpError> {
        let window = self.window_ack_size;
        self.send(RtmpMessage::WindowAcknowledgement { size: window }, 0)?;
        self.send(
            RtmpMessage::SetPeerBandwidth {
                size: window,
                limit_type: PeerBandwidthLimitType::Dynamic,
            },
            0,
        )?;
        let packet = self
            .serializer
            .set_max_chunk_size(self.chunk_size, RtmpTimestamp::new(0))
            .map_err(|e| RtmpError::Encode(e.to_string()))?;
        self.raw(packet.bytes);
        let properties = HashMap::from([
            (
                "fmsVer".to_string(),
                Amf0Value::Utf8String("FMS/3,0,1,123".into()),
            ),
            ("capabilities".to_string(), Amf0Value::Number(31.0)),
            ("mode".to_string(), Amf0Value::Number(1.0)),
        ]);
        let mut info = status(
            "status",
            "NetConnection.Connect.Success",
            "Connection succeeded.",
        );
        info.insert("objectEncoding".into(), Amf0Value::Number(object_encoding));
        let message = RtmpMessage::Amf0Command {
            command_name: "_result".into(),
            transaction_id: transaction,
            command_object: Amf0Value::Object(properties),
            additional_arguments: vec![Amf0Value::Object(info)],
        };
        self.send(message, 0)
    }

    pub fn connect_refused(
        &mut self,
        transaction: f64,
        description: &str,
    ) -> Result<(), RtmpError> {
        let info = status("error", "NetConnection.Connect.Rejected", description);
        self.command("_error", transaction, vec![Amf0Value::Object(info)], 0)
    }

    /// `_result` with a null command object and one value.
    pub fn result(&mut self, transaction: f64, value: Amf0Value) -> Result<(), RtmpError> {
        self.command("_result", transaction, vec![value], 0)
    }

    pub fn publish_started(&mut self, stream_id: u32, key: &str) -> Result<(), RtmpError> {
        let begin = RtmpMessage::UserControl {
            event_type: UserControlEventType::StreamBegin,
            stream_id: Some(stream_id),
            buffer_length: None,
            timestamp: None,
        };
        self.send(begin, 0)?;
        let info = status(
            "status",
            "NetStream.Publish.Start",
            &format!("{key} is now published."),
        );
        self.command("onStatus", 0.0, vec![Amf0Value::Object(info)], stream_id)
    }

    pub fn publish_refused(&mut self, stream_id: u32, reason: &str) -> Result<(), RtmpError> {
        let info = status("error", "NetStream.Publish.BadName", reason);
        self.command("onStatus", 0.0, vec![Amf0Value::Object(info)], stream_id)
    }

    pub fn play_refused(&mut self, stream_id: u32) -> Result<(), RtmpError> {
        let info = status(
            "error",
            "NetStream.Play.Failed",
            "playback over RTMP is not offered; use WHEP, HLS or WebSocket",
        );
        self.command("onStatus", 0.0, vec![Amf0Value::Object(info)], stream_id)
    }

    pub fn ping_response(&mut self, timestamp: u32) -> Result<(), RtmpError> {
        let message = RtmpMessage::UserControl {
            event_type: UserControlEventType::PingResponse,
            stream_id: None,
            buffer_length: None,
            timestamp: Some(RtmpTimestamp::new(timestamp)),
        };
        self.send(message, 0)
    }

    pub fn acknowledgement(&mut self, sequence_number: u32) -> Result<(), RtmpError> {
        self.send(RtmpMessage::Acknowledgement { sequence_number }, 0)
    }
}

fn status(level: &str, code: &str, description: &str) -> HashMap<String, Amf0Value> {
    HashMap::from([
        ("level".to_string(), Amf0Value::Utf8String(level.into())),
        ("code".to_string(), Amf0Value::Utf8String(code.into())),
        (
            "description".to_string(),
            Amf0Value::Utf8String(description.into()),
        ),
    ])
}
