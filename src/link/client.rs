//! The protocol client: one per link, owned by the task that consumes it.
//!
//! The owner drives it with [`Client::next`]; [`Client::call`] waits for one response and
//! keeps whatever else arrived meanwhile for the next `next`.

use std::collections::VecDeque;

use odu_proto::{CANCEL_STREAM, HANDSHAKE, Handshake, ITEM, Message, PROTOCOL_VERSION, RpcError};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::link::wire::{FrameReader, Incoming, ReadError, spawn_writer};

#[derive(Debug)]
pub enum ClientEvent {
    /// One item of a stream, as raw JSON: consumers parse it into their own type, borrowing
    /// from it (log data is megabytes of base64 that need not be copied again).
    Item {
        stream: u64,
        value: Box<RawValue>,
    },
    Response {
        id: u64,
        result: Result<Value, RpcError>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Read(#[from] ReadError),
    #[error("the link closed")]
    Closed,
    #[error("{0}")]
    Refused(RpcError),
}

#[derive(Deserialize)]
struct ItemEnvelope<'a> {
    #[serde(borrow)]
    method: &'a str,
    #[serde(borrow)]
    params: ItemParams<'a>,
}

#[derive(Deserialize)]
struct ItemParams<'a> {
    id: u64,
    #[serde(borrow)]
    value: &'a RawValue,
}

pub struct Client<R> {
    frames: FrameReader<R>,
    out: mpsc::Sender<Vec<u8>>,
    next_id: u64,
    backlog: VecDeque<ClientEvent>,
    /// An error the peer sent about the link itself (no request id), reported if it closes.
    closing: Option<RpcError>,
    /// The peer's build, from the handshake.
    pub peer_build: String,
}

impl<R: AsyncRead + Unpin> Client<R> {
    /// Wraps a link and performs the handshake.
    pub async fn connect<W>(reader: R, writer: W, label: &'static str) -> Result<Self, ClientError>
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (out, _writer) = spawn_writer(writer, 256);
        let mut client = Client {
            frames: FrameReader::new(reader, label),
            out,
            next_id: 0,
            backlog: VecDeque::new(),
            closing: None,
            peer_build: String::new(),
        };
        let hello = Handshake { protocol: PROTOCOL_VERSION, build: odu_proto::BUILD_ID.into() };
        let reply = client.call(HANDSHAKE, json!(hello)).await?;
        let reply: Handshake = serde_json::from_value(reply).map_err(|e| {
            ClientError::Refused(RpcError::invalid_params(format!("bad handshake reply: {e}")))
        })?;
        if reply.protocol != PROTOCOL_VERSION {
            return Err(ClientError::Refused(RpcError::new(
                odu_proto::error_code::VERSION_MISMATCH,
                format!(
                    "protocol version mismatch: the peer ({}) speaks {}, this odu ({}) speaks {PROTOCOL_VERSION}",
                    reply.build,
                    reply.protocol,
                    odu_proto::BUILD_ID
                ),
            )));
        }
        client.peer_build = reply.build;
        Ok(client)
    }

    /// Sends a request and returns its id without waiting.
    pub async fn send(&mut self, method: &str, params: Value) -> Result<u64, ClientError> {
        self.send_frame(|id| Message::request(id, method, params).to_frame()).await
    }

    /// Sends the frame `frame` makes of the next request id, and returns that id.
    async fn send_frame(&mut self, frame: impl FnOnce(u64) -> Vec<u8>) -> Result<u64, ClientError> {
        self.next_id += 1;
        let id = self.next_id;
        self.out.send(frame(id)).await.map_err(|_| ClientError::Closed)?;
        Ok(id)
    }

    /// Stops a stream.
    pub async fn cancel_stream(&mut self, stream: u64) -> Result<(), ClientError> {
        let frame = Message::notification(CANCEL_STREAM, json!({ "id": stream })).to_frame();
        self.out.send(frame).await.map_err(|_| ClientError::Closed)
    }

    /// Sends a request and waits for its response.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.send(method, params).await?;
        self.answer(id).await
    }

    /// [`Client::call`] with params written straight from `params`, never made a [`Value`].
    pub async fn call_with<P: serde::Serialize + ?Sized>(
        &mut self,
        method: &str,
        params: &P,
    ) -> Result<Value, ClientError> {
        let id = self.send_frame(|id| odu_proto::message::request_frame(id, method, params)).await?;
        self.answer(id).await
    }

    /// Waits for the response to request `id`, keeping what else comes meanwhile.
    async fn answer(&mut self, id: u64) -> Result<Value, ClientError> {
        loop {
            match self.read_event().await? {
                Some(ClientEvent::Response { id: got, result }) if got == id => {
                    return result.map_err(ClientError::Refused);
                }
                Some(other) => self.backlog.push_back(other),
                None => return Err(ClientError::Closed),
            }
        }
    }

    /// Whether the next [`Client::next`] has an event already here, without reading the link:
    /// a consumer that writes what it heard can write once for a burst of events.
    pub fn has_buffered(&self) -> bool {
        !self.backlog.is_empty() || self.frames.holds_a_line()
    }

    /// The next item or response; `None` when the link closed.
    pub async fn next(&mut self) -> Result<Option<ClientEvent>, ClientError> {
        if let Some(event) = self.backlog.pop_front() {
            return Ok(Some(event));
        }
        self.read_event().await
    }

    /// The next item or response; `None` when the link closed, or the peer's error when it
    /// said why before closing (a server at its limits).
    async fn read_event(&mut self) -> Result<Option<ClientEvent>, ClientError> {
        loop {
            // A peer that closes with our request unread may reset the link after its last
            // word: that word is the reason.
            let bytes = match (self.frames.next_frame().await, self.closing.take()) {
                (Ok(Some(bytes)), closing) => {
                    self.closing = closing;
                    bytes
                }
                (Ok(None) | Err(_), Some(error)) => return Err(ClientError::Refused(error)),
                (Ok(None), None) => return Ok(None),
                (Err(e), None) => return Err(e.into()),
            };
            // Stream items are most of the traffic: take them without building a JSON tree.
            if let Ok(item) = serde_json::from_slice::<ItemEnvelope>(&bytes)
                && item.method == ITEM
            {
                return Ok(Some(ClientEvent::Item {
                    stream: item.params.id,
                    value: item.params.value.to_owned(),
                }));
            }
            let incoming = match Message::parse(&bytes) {
                Ok(message) => Incoming::Message(message),
                Err(error) => Incoming::Invalid(error),
            };
            match incoming {
                Incoming::Message(Message::Response { id, result }) => {
                    if let Some(id) = id.as_u64() {
                        return Ok(Some(ClientEvent::Response { id, result }));
                    }
                    if let Err(error) = result {
                        self.closing = Some(error);
                    }
                }
                Incoming::Message(_) | Incoming::Invalid(_) => {}
            }
        }
    }

    /// Whether the writer side is still open.
    pub fn sender(&self) -> mpsc::Sender<Vec<u8>> {
        self.out.clone()
    }
}
