//! A bounded AMF0 decoder for command and data messages.
//!
//! rml_amf0's decoder recurses once per nesting level without a limit (a few kilobytes of
//! nested objects overflow the stack) and rml_rtmp's command decoder panics on fewer than three
//! values, so incoming AMF0 is decoded here. Outgoing messages still use rml_rtmp.

use std::collections::HashMap;

use rml_rtmp::rml_amf0::Amf0Value;

use crate::RtmpError;

/// Deeper nesting than any real client sends (connect objects are two levels deep).
const MAX_DEPTH: usize = 16;

/// A decoded command message: `name`, transaction id, then the command object and arguments.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Command {
    pub name: String,
    pub transaction: f64,
    /// The command object (often `Null`) followed by the arguments.
    pub args: Vec<Amf0Value>,
}

impl Command {
    /// Decodes a type 20 (AMF0) command. Type 17 (AMF3) commands from Flash carry one
    /// format byte and then AMF0; the caller strips it.
    pub fn decode(payload: &[u8]) -> Result<Command, RtmpError> {
        let mut values = decode_all(payload)?.into_iter();
        let Some(Amf0Value::Utf8String(name)) = values.next() else {
            return Err(RtmpError::BadMessage(
                "a command did not start with its name",
            ));
        };
        let transaction = match values.next() {
            Some(Amf0Value::Number(n)) => n,
            // Some encoders send deleteStream/FCUnpublish notices without a transaction id.
            None => 0.0,
            Some(_) => {
                return Err(RtmpError::BadMessage(
                    "a command's transaction id was not a number",
                ));
            }
        };
        Ok(Command {
            name,
            transaction,
            args: values.collect(),
        })
    }

    /// The `n`th argument after the command object, as a string.
    pub fn string_arg(&self, n: usize) -> Option<&str> {
        match self.args.get(n + 1) {
            Some(Amf0Value::Utf8String(s)) => Some(s),
            _ => None,
        }
    }

    /// The `n`th argument after the command object, as a number.
    pub fn number_arg(&self, n: usize) -> Option<f64> {
        match self.args.get(n + 1) {
            Some(Amf0Value::Number(v)) => Some(*v),
            _ => None,
        }
    }

    /// The `n`th argument after the command object, as a boolean (a number counts as true
    /// when it is not 0, as Flash clients may send either).
    pub fn bool_arg(&self, n: usize) -> Option<bool> {
        match self.args.get(n + 1) {
            Some(Amf0Value::Boolean(b)) => Some(*b),
            Some(Amf0Value::Number(v)) => Some(*v != 0.0),
            _ => None,
        }
    }

    /// A property of the command object.
    pub fn property(&self, key: &str) -> Option<&Amf0Value> {
        match self.args.first() {
            Some(Amf0Value::Object(props)) => props.get(key),
            _ => None,
        }
    }
}

/// Decodes every value in `data`.
pub(crate) fn decode_all(data: &[u8]) -> Result<Vec<Amf0Value>, RtmpError> {
    let mut d = Decoder { data, pos: 0 };
    let mut out = Vec::new();
    while d.pos < data.len() {
        out.push(d.value(0)?);
    }
    Ok(out)
}

struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
}

const TRUNCATED: RtmpError = RtmpError::BadMessage("truncated AMF0 value");

impl Decoder<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], RtmpError> {
        let end = self.pos.checked_add(n).ok_or(TRUNCATED)?;
        let out = self.data.get(self.pos..end).ok_or(TRUNCATED)?;
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, RtmpError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, RtmpError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, RtmpError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f64(&mut self) -> Result<f64, RtmpError> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(f64::from_be_bytes(a))
    }

    fn string(&mut self, len: usize) -> Result<String, RtmpError> {
        // `take` checks the length against the bytes present before anything is allocated.
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| RtmpError::BadMessage("an AMF0 string was not UTF-8"))
    }

    fn value(&mut self, depth: usize) -> Result<Amf0Value, RtmpError> {
        if depth > MAX_DEPTH {
            return Err(RtmpError::BadMessage("AMF0 values nested too deeply"));
        }
        Ok(match self.u8()? {
            0x00 => Amf0Value::Number(self.f64()?),
            0x01 => Amf0Value::Boolean(self.u8()? != 0),
            0x02 => {
                let len = self.u16()?;
                Amf0Value::Utf8String(self.string(len.into())?)
            }
            0x03 => Amf0Value::Object(self.properties(depth)?),
            0x05 => Amf0Value::Null,
            0x06 => Amf0Value::Undefined,
            // A reference to an earlier object: we keep no table, and commands never use it.
            0x07 => {
                self.u16()?;
                Amf0Value::Undefined
            }
            // ECMA array: the count is advisory; it ends like an object.
            0x08 => {
                self.u32()?;
                Amf0Value::Object(self.properties(depth)?)
            }
            0x0a => {
                let count = self.u32()?;
                // No preallocation: the count is the peer's claim, the bytes are the truth.
                let mut items = Vec::new();
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Amf0Value::StrictArray(items)
            }
            0x0b => {
                let ms = self.f64()?;
                self.u16()?; // time zone, reserved
                Amf0Value::Number(ms)
            }
            0x0c => {
                let len = self.u32()?;
                let len = usize::try_from(len).map_err(|_| TRUNCATED)?;
                Amf0Value::Utf8String(self.string(len)?)
            }
            0x0d => Amf0Value::Undefined, // unsupported
            0x09 => {
                return Err(RtmpError::BadMessage(
                    "an AMF0 object end outside an object",
                ));
            }
            _ => return Err(RtmpError::BadMessage("unknown AMF0 type marker")),
        })
    }

    fn properties(&mut self, depth: usize) -> Result<HashMap<String, Amf0Value>, RtmpError> {
        let mut props = HashMap::new();
        loop {
            let len = self.u16()?;
            if len == 0 {
                if self.u8()? != 0x09 {
                    return Err(RtmpError::BadMessage("an AMF0 property had an empty name"));
                }
                return Ok(props);
            }
            let key = self.string(len.into())?;
            let value = self.value(depth + 1)?;
            props.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(values: &[Amf0Value]) -> Vec<u8> {
        rml_rtmp::rml_amf0::serialize(&values.to_vec()).unwrap()
    }

    #[test]
    fn decodes_what_rml_amf0_encodes() {
        let mut obj = HashMap::new();
        obj.insert("app".to_string(), Amf0Value::Utf8String("live".into()));
        obj.insert("objectEncoding".to_string(), Amf0Value::Number(0.0));
        let values = vec![
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
            Amf0Value::Object(obj),
            Amf0Value::Null,
            Amf0Value::Boolean(true),
            Amf0Value::StrictArray(vec![Amf0Value::Number(2.0)]),
        ];
        assert_eq!(decode_all(&encode(&values)).unwrap(), values);
        let cmd = Command::decode(&encode(&values)).unwrap();
        assert_eq!(cmd.name, "connect");
        assert_eq!(cmd.transaction, 1.0);
        assert_eq!(
            cmd.property("app"),
            Some(&Amf0Value::Utf8String("live".into()))
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // 100k nested strict arrays of one element each.
        let mut data = Vec::new();
        for _ in 0..100_000 {
            data.extend_from_slice(&[0x0a, 0, 0, 0, 1]);
        }
        assert_eq!(
            decode_all(&data),
            Err(RtmpError::BadMessage("AMF0 values nested too deeply"))
        );
    }

    #[test]
    fn lying_lengths_are_errors() {
        // A strict array claiming 4 billion items, a string claiming 65535 bytes.
        assert_eq!(decode_all(&[0x0a, 0xff, 0xff, 0xff, 0xff]), Err(TRUNCATED));
        assert_eq!(decode_all(&[0x02, 0xff, 0xff, b'a']), Err(TRUNCATED));
        assert_eq!(decode_all(&[0x0c, 0xff, 0xff, 0xff, 0xff]), Err(TRUNCATED));
    }

    #[test]
    fn commands_need_a_name() {
        assert!(Command::decode(&[]).is_err());
        assert!(Command::decode(&encode(&[Amf0Value::Number(1.0)])).is_err());
        // Name alone is accepted with transaction 0 (rml_rtmp would panic here).
        let cmd = Command::decode(&encode(&[Amf0Value::Utf8String("FCUnpublish".into())])).unwrap();
        assert_eq!((cmd.name.as_str(), cmd.transaction), ("FCUnpublish", 0.0));
    }
}
