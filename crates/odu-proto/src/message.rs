//! JSON-RPC 2.0 messages.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod error_code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    /// The request was understood and refused (unknown node, already configured, …).
    pub const REFUSED: i64 = -32000;
    /// The peer speaks another protocol version.
    pub const VERSION_MISMATCH: i64 = -32001;
    /// A request arrived before the handshake.
    pub const NO_HANDSHAKE: i64 = -32002;
    /// The server is at one of its limits (clients, buffers) and closed the link: try again
    /// shortly.
    pub const BUSY: i64 = -32003;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    /// More about the error (JSON-RPC's `data`): odu sends `{"detail": [lines]}`, what a tool
    /// printed about a refusal, one entry a line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError { code, message: message.into(), data: None }
    }
    pub fn refused(message: impl Into<String>) -> Self {
        RpcError::new(error_code::REFUSED, message)
    }
    pub fn invalid_params(message: impl Into<String>) -> Self {
        RpcError::new(error_code::INVALID_PARAMS, message)
    }
}

/// One JSON-RPC message, classified. Its params are a [`Value`], or with [`RawParams`] the JSON
/// text they came as ([`Message::parse_raw`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Message<P = Value> {
    Request { id: Value, method: String, params: P },
    Notification { method: String, params: P },
    Response { id: Value, result: Result<Value, RpcError> },
}

/// A message's params as the JSON text they came as: a reader takes them straight into its own
/// type (a run's whole plan, for `run.configure`) without building a [`Value`] of them first.
pub type RawParams = Box<serde_json::value::RawValue>;

/// What a message's params are read as, and what stands for params a message left out.
pub trait Params: serde::de::DeserializeOwned {
    fn absent() -> Self;
}

impl Params for Value {
    fn absent() -> Self {
        Value::Null
    }
}

impl Params for RawParams {
    fn absent() -> Self {
        serde_json::value::RawValue::NULL.to_owned()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(bound(deserialize = "P: serde::de::DeserializeOwned"))]
struct Envelope<P = Value> {
    jsonrpc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    params: Option<P>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<RpcError>,
}

/// [`Envelope`] as a message is written, borrowed from it: the same fields, in the same order.
/// Its params may be any serializable value ([`request_frame`]), written as they are.
#[derive(Serialize)]
struct EnvelopeOut<'a, P: Serialize + ?Sized = Value> {
    jsonrpc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a P>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a RpcError>,
}

impl<P: Serialize + ?Sized> Default for EnvelopeOut<'_, P> {
    fn default() -> Self {
        EnvelopeOut { jsonrpc: "2.0", id: None, method: None, params: None, result: None, error: None }
    }
}

/// The whole frame of request `id`, its params written straight from `params`: the same bytes
/// as [`Message::request`] with `params` made a [`Value`] first, without building that value (a
/// run's plan, for `run.configure`).
pub fn request_frame<P: Serialize + ?Sized>(id: u64, method: &str, params: &P) -> Vec<u8> {
    let id = Value::from(id);
    let envelope =
        EnvelopeOut { id: Some(&id), method: Some(method), params: Some(params), ..EnvelopeOut::default() };
    framed(&serde_json::to_vec(&envelope).expect("messages always serialize"))
}

/// A message's JSON as a whole frame, newline included.
fn framed(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    crate::frame::encode_frame(json, &mut out);
    out
}

impl Message {
    pub fn request(id: u64, method: &str, params: Value) -> Message {
        Message::Request { id: Value::from(id), method: method.into(), params }
    }
    pub fn notification(method: &str, params: Value) -> Message {
        Message::Notification { method: method.into(), params }
    }
    pub fn ok(id: Value, result: Value) -> Message {
        Message::Response { id, result: Ok(result) }
    }
    pub fn err(id: Value, error: RpcError) -> Message {
        Message::Response { id, result: Err(error) }
    }

    /// Parses one decoded frame. Errors carry the JSON-RPC error to answer with.
    pub fn parse(bytes: &[u8]) -> Result<Message, RpcError> {
        classify(bytes)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Written from borrows: a message (the run's whole plan, for one) is not copied to be sent.
        let envelope: EnvelopeOut = match self {
            Message::Request { id, method, params } => EnvelopeOut {
                id: Some(id),
                method: Some(method),
                params: Some(params),
                ..EnvelopeOut::default()
            },
            Message::Notification { method, params } => {
                EnvelopeOut { method: Some(method), params: Some(params), ..EnvelopeOut::default() }
            }
            Message::Response { id, result: Ok(result) } => {
                EnvelopeOut { id: Some(id), result: Some(result), ..EnvelopeOut::default() }
            }
            Message::Response { id, result: Err(error) } => {
                EnvelopeOut { id: Some(id), error: Some(error), ..EnvelopeOut::default() }
            }
        };
        serde_json::to_vec(&envelope).expect("messages always serialize")
    }

    /// The whole frame, newline included.
    pub fn to_frame(&self) -> Vec<u8> {
        framed(&self.to_json())
    }
}

impl Message<RawParams> {
    /// [`Message::parse`] keeping the params as their JSON text.
    pub fn parse_raw(bytes: &[u8]) -> Result<Message<RawParams>, RpcError> {
        classify(bytes)
    }
}

/// Reads and classifies one decoded frame, its params read as `P`.
fn classify<P: Params>(bytes: &[u8]) -> Result<Message<P>, RpcError> {
    let envelope: Envelope<P> = serde_json::from_slice(bytes)
        .map_err(|e| RpcError::new(error_code::PARSE_ERROR, format!("not a JSON-RPC message: {e}")))?;
    if envelope.jsonrpc != "2.0" {
        return Err(RpcError::new(error_code::INVALID_REQUEST, "jsonrpc must be \"2.0\""));
    }
    let params = envelope.params.unwrap_or_else(P::absent);
    match (envelope.method, envelope.id) {
        (Some(method), Some(id)) => Ok(Message::Request { id, method, params }),
        (Some(method), None) => Ok(Message::Notification { method, params }),
        (None, Some(id)) => match (envelope.result, envelope.error) {
            (_, Some(error)) => Ok(Message::Response { id, result: Err(error) }),
            (result, None) => Ok(Message::Response { id, result: Ok(result.unwrap_or(Value::Null)) }),
        },
        // An error about a frame that could not be read carries `"id": null`.
        (None, None) => match envelope.error {
            Some(error) => Ok(Message::Response { id: Value::Null, result: Err(error) }),
            None => Err(RpcError::new(error_code::INVALID_REQUEST, "message has neither method nor id")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_round_trip() {
        for m in [
            Message::request(1, "nodes.get", json!({})),
            Message::notification("$/item", json!({"id": 1, "value": 2})),
            Message::ok(json!(1), json!({"ok": true})),
            Message::err(Value::Null, RpcError::refused("unreadable frame")),
            Message::err(json!(1), RpcError::refused("no")),
            Message::err(Value::Null, RpcError::refused("unreadable frame")),
        ] {
            assert_eq!(Message::parse(&m.to_json()).unwrap(), m);
        }
        assert_eq!(Message::parse(b"[1,2]").unwrap_err().code, error_code::PARSE_ERROR);
    }

    /// Read with its params kept as text, a message is classified as [`Message::parse`] does
    /// it, and its params read into a value are the value's.
    #[test]
    fn a_message_read_raw_is_the_message_with_its_params_as_text() {
        let as_value = |m: Message<RawParams>| match m {
            Message::Request { id, method, params } => {
                Message::Request { id, method, params: serde_json::from_str(params.get()).unwrap() }
            }
            Message::Notification { method, params } => {
                Message::Notification { method, params: serde_json::from_str(params.get()).unwrap() }
            }
            Message::Response { id, result } => Message::Response { id, result },
        };
        let frames: [&[u8]; 7] = [
            br#"{"jsonrpc":"2.0","id":7,"method":"run.configure","params":{"tasks":[{"id":"a","argv":["just","a\"b"]}]}}"#,
            br#"{"jsonrpc":"2.0","id":"x","method":"nodes.get"}"#,
            br#"{"jsonrpc":"2.0","method":"$/cancel","params":{"id":3}}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{"ok":true}}"#,
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"no"}}"#,
            br#"{"jsonrpc":"1.0","id":1,"method":"m"}"#,
            br#"{"jsonrpc":"2.0","params":[1]}"#,
        ];
        for frame in frames {
            assert_eq!(
                Message::parse_raw(frame).map(as_value),
                Message::parse(frame),
                "{}",
                String::from_utf8_lossy(frame)
            );
        }
        let Ok(Message::Request { params, .. }) =
            Message::parse_raw(br#"{"jsonrpc":"2.0","id":2,"method":"m"}"#)
        else {
            panic!("a request");
        };
        assert_eq!(params.get(), "null", "params left out read as null, as Message::parse reads them");
        assert_eq!(Message::parse_raw(b"{").unwrap_err().code, error_code::PARSE_ERROR);
    }

    #[test]
    fn a_message_is_written_byte_for_byte_as_its_envelope() {
        let envelope = |id: Option<Value>, method: Option<&str>, params: Option<Value>, result, error| {
            Envelope { jsonrpc: "2.0".into(), id, method: method.map(str::to_string), params, result, error }
        };
        let mut detailed = RpcError::refused("no");
        detailed.data = Some(json!({"detail": ["a", "b"]}));
        let cases = [
            (
                Message::request(7, "run.configure", json!({"tasks": [{"id": "a", "argv": ["just"]}]})),
                envelope(
                    Some(json!(7)),
                    Some("run.configure"),
                    Some(json!({"tasks": [{"id": "a", "argv": ["just"]}]})),
                    None,
                    None,
                ),
            ),
            (
                Message::notification("$/cancel", json!({"id": 3})),
                envelope(None, Some("$/cancel"), Some(json!({"id": 3})), None, None),
            ),
            (
                Message::ok(json!("x"), json!(null)),
                envelope(Some(json!("x")), None, None, Some(json!(null)), None),
            ),
            (
                Message::err(Value::Null, detailed.clone()),
                envelope(Some(Value::Null), None, None, None, Some(detailed)),
            ),
        ];
        for (message, envelope) in cases {
            assert_eq!(
                String::from_utf8(message.to_json()).unwrap(),
                serde_json::to_string(&envelope).unwrap()
            );
        }
    }

    #[test]
    fn a_request_written_from_its_params_is_the_request_of_their_value() {
        #[derive(Serialize)]
        struct Params {
            name: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            jobs: Option<u32>,
            tasks: Vec<(String, Vec<String>)>,
        }
        let params = Params {
            name: "x86_64-linux".into(),
            jobs: None,
            tasks: vec![("a\"b".into(), vec!["just".into(), "--no-deps".into()])],
        };
        assert_eq!(
            request_frame(9, "run.configure", &params),
            Message::request(9, "run.configure", serde_json::to_value(&params).unwrap()).to_frame()
        );
    }
}
