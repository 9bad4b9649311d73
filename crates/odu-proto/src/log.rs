//! Stream items on the hot path: the encoders every end that streams shares (the runner's
//! `nodeLog` to its lane, the server's cells and logs to its clients), and the borrowed reader
//! of a `nodeLog` item.
//!
//! Log data is base64 ([`crate::LogFrame`]), which needs no escaping: the encoders write it
//! straight into the JSON of the frame, and the reader hands the base64 text back borrowed from
//! the frame, so megabytes of log never pass through a serializer or an extra copy.

use std::io::Write;

use serde::Deserialize;
use serde_json::Value;

/// One piece of a node's log, as an encoder takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogChunk<'a> {
    /// The start of a generation's log, with its first bytes: a `snapshot` item.
    Snapshot { generation: u32, bytes: &'a [u8] },
    /// More bytes of the current generation: an `append` item.
    Append(&'a [u8]),
    /// A subscriber that fell behind lost this many bytes: a `missed` item.
    Missed(u64),
    /// Nothing more will be written to this generation's log: an `end` item.
    End,
}

/// The whole frame of one stream item whose value is already JSON.
pub fn item_frame(stream: &Value, value_json: &[u8]) -> Vec<u8> {
    let mut json = item_prefix(stream, value_json.len());
    json.extend_from_slice(value_json);
    json.extend_from_slice(b"}}");
    frame_of(&json)
}

/// The whole frame of one `nodeLog` item, built in one buffer.
pub fn log_item_frame(stream: &Value, chunk: LogChunk<'_>) -> Vec<u8> {
    let size = match chunk {
        LogChunk::Snapshot { bytes, .. } | LogChunk::Append(bytes) => bytes.len().div_ceil(3) * 4,
        LogChunk::End | LogChunk::Missed(_) => 0,
    };
    let mut json = item_prefix(stream, size + 64);
    append_log_value(&mut json, chunk);
    json.extend_from_slice(b"}}");
    frame_of(&json)
}

/// The JSON of one `nodeLog` item's value.
pub fn log_frame_json(chunk: LogChunk<'_>) -> Vec<u8> {
    let mut json = Vec::new();
    append_log_value(&mut json, chunk);
    json
}

fn item_prefix(stream: &Value, room: usize) -> Vec<u8> {
    // A stream's id is a number or a short string: written in place, room to spare.
    let mut json = Vec::with_capacity(room + 96);
    json.extend_from_slice(br#"{"jsonrpc":"2.0","method":"$/item","params":{"id":"#);
    serde_json::to_writer(&mut json, stream).expect("ids serialize");
    json.extend_from_slice(br#","value":"#);
    json
}

fn frame_of(json: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(json.len().div_ceil(3) * 4 + 1);
    crate::encode_frame(json, &mut frame);
    frame
}

fn append_log_value(json: &mut Vec<u8>, chunk: LogChunk<'_>) {
    let data = |json: &mut Vec<u8>, bytes: &[u8]| {
        json.extend_from_slice(br#","data":""#);
        base64_simd::STANDARD.encode_append(bytes, json);
        json.extend_from_slice(br#""}"#);
    };
    match chunk {
        LogChunk::Snapshot { generation, bytes } => {
            // Written in place (a Vec takes writes whole): no string made for it.
            let _ = write!(json, r#"{{"kind":"snapshot","generation":{generation}"#);
            data(json, bytes);
        }
        LogChunk::Append(bytes) => {
            json.extend_from_slice(br#"{"kind":"append""#);
            data(json, bytes);
        }
        LogChunk::Missed(bytes) => {
            let _ = write!(json, r#"{{"kind":"missed","bytes":{bytes}}}"#);
        }
        LogChunk::End => json.extend_from_slice(br#"{"kind":"end"}"#),
    }
}

/// A `nodeLog` item as read: [`crate::LogFrame`] with its base64 data borrowed from the frame,
/// to be decoded straight into wherever the bytes go ([`LogItem::decode_append`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogItem<'a> {
    Snapshot { generation: u32, data: &'a str },
    Append { data: &'a str },
    End,
    Missed { bytes: u64 },
}

/// How a `nodeLog` item is read: as one flat struct in a single pass (an internally tagged
/// enum buffers every item into an intermediate tree first).
#[derive(Deserialize)]
struct LogItemWire<'a> {
    kind: LogKind,
    #[serde(default)]
    generation: u32,
    #[serde(default, borrow)]
    data: Option<&'a str>,
    #[serde(default)]
    bytes: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum LogKind {
    Snapshot,
    Append,
    End,
    Missed,
}

impl<'a> LogItem<'a> {
    /// Reads one item's value (the JSON of the `value` of a `$/item`).
    pub fn parse(json: &'a str) -> Result<LogItem<'a>, String> {
        let wire: LogItemWire<'a> = serde_json::from_str(json).map_err(|e| format!("not a log item: {e}"))?;
        // A data item without data carries no bytes.
        let data = wire.data.unwrap_or_default();
        Ok(match wire.kind {
            LogKind::Snapshot => LogItem::Snapshot { generation: wire.generation, data },
            LogKind::Append => LogItem::Append { data },
            LogKind::End => LogItem::End,
            LogKind::Missed => LogItem::Missed { bytes: wire.bytes },
        })
    }

    /// The base64 data of a `snapshot` or `append`.
    pub fn data(&self) -> Option<&'a str> {
        match self {
            LogItem::Snapshot { data, .. } | LogItem::Append { data } => Some(data),
            LogItem::End | LogItem::Missed { .. } => None,
        }
    }

    /// Appends the item's bytes to `out` (nothing for an item without data). On data that is
    /// not base64, `out` is left as it was and the error says so.
    pub fn decode_append(&self, out: &mut Vec<u8>) -> Result<(), String> {
        let Some(data) = self.data() else { return Ok(()) };
        let len = out.len();
        base64_simd::STANDARD.decode_append(data, out).map(|_| ()).map_err(|e| {
            out.truncate(len);
            format!("log data is not base64: {e}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogFrame;

    #[test]
    fn every_chunk_encodes_as_the_typed_frame_says_and_reads_back() {
        let chunks = [
            LogChunk::Snapshot { generation: 2, bytes: b"building\n" },
            LogChunk::Append(b"\x00\xffraw bytes"),
            LogChunk::Missed(42),
            LogChunk::End,
        ];
        for chunk in chunks {
            let json = log_frame_json(chunk);
            let typed: LogFrame = serde_json::from_slice(&json).unwrap();
            let expected = match chunk {
                LogChunk::Snapshot { generation, bytes } => {
                    LogFrame::Snapshot { generation, data: LogFrame::encode_data(bytes) }
                }
                LogChunk::Append(bytes) => LogFrame::Append { data: LogFrame::encode_data(bytes) },
                LogChunk::Missed(bytes) => LogFrame::Missed { bytes },
                LogChunk::End => LogFrame::End,
            };
            assert_eq!(typed, expected);
            assert_eq!(serde_json::to_vec(&typed).unwrap(), json, "the hand-built JSON is serde's");
            let text = std::str::from_utf8(&json).unwrap();
            let item = LogItem::parse(text).unwrap();
            let mut bytes = b"kept".to_vec();
            item.decode_append(&mut bytes).unwrap();
            match chunk {
                LogChunk::Snapshot { bytes: sent, .. } | LogChunk::Append(sent) => {
                    assert_eq!(bytes, [b"kept".as_slice(), sent].concat())
                }
                LogChunk::Missed(n) => assert_eq!(item, LogItem::Missed { bytes: n }),
                LogChunk::End => assert_eq!(item, LogItem::End),
            }
        }
        // The frame is the item's `$/item` notification, framed.
        let frame = log_item_frame(&Value::from(4), LogChunk::End);
        let json = crate::decode_line(&frame).unwrap().unwrap();
        assert_eq!(json, br#"{"jsonrpc":"2.0","method":"$/item","params":{"id":4,"value":{"kind":"end"}}}"#);
        assert_eq!(frame, item_frame(&Value::from(4), br#"{"kind":"end"}"#));
        // A string id is written as JSON writes it, escapes and all.
        let frame = log_item_frame(&Value::from("a\"b"), LogChunk::Missed(7));
        let json = crate::decode_line(&frame).unwrap().unwrap();
        assert_eq!(
            json,
            br#"{"jsonrpc":"2.0","method":"$/item","params":{"id":"a\"b","value":{"kind":"missed","bytes":7}}}"#
        );
    }

    #[test]
    fn a_bad_item_is_refused_and_bad_data_leaves_the_buffer_alone() {
        assert_eq!(LogItem::parse(r#"{"kind":"append"}"#), Ok(LogItem::Append { data: "" }));
        assert!(LogItem::parse(r#"{"kind":"nope"}"#).is_err());
        let item = LogItem::parse(r#"{"kind":"append","data":"!!not base64"}"#).unwrap();
        let mut out = b"kept".to_vec();
        assert!(item.decode_append(&mut out).is_err());
        assert_eq!(out, b"kept");
    }
}
