//! The surface contract: method names and the shapes of their params and results.

use odu_core::{NodeView, TaskSpec};
use serde::{Deserialize, Serialize};

pub const HANDSHAKE: &str = "handshake";
pub const RUN_CONFIGURE: &str = "run.configure";
pub const NODES_GET: &str = "nodes.get";
pub const NODE_LOG_GET: &str = "nodeLog.get";
pub const NODE_RERUN: &str = "node.rerun";
pub const NODE_CANCEL: &str = "node.cancel";
/// Notification carrying one item of a stream: [`StreamItem`].
pub const ITEM: &str = "$/item";
/// Notification from a client that stops one of its streams: [`CancelStream`].
pub const CANCEL_STREAM: &str = "$/cancel";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    pub protocol: u32,
    pub build: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamItem<T> {
    /// The id of the request that opened the stream.
    pub id: serde_json::Value,
    pub value: T,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelStream {
    pub id: serde_json::Value,
}

/// `run.configure`: what a lane runs and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configure {
    /// The pipeline's name (the root namepath).
    pub name: String,
    /// The directory nodes run in (a checkout of the commit under test).
    pub workspace: String,
    /// Tasks in dependency order; `_ci-setup` is seeded by the runner.
    pub tasks: Vec<TaskSpec>,
    /// Cap on concurrently running nodes; absent means no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<usize>,
    /// Extra environment for every node (never credentials).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
}

/// Params naming one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeParams {
    pub id: String,
}

/// Items of the `nodes` cell: a snapshot first (and after a resync), then deltas carrying only
/// the nodes that changed. Revisions increase by one per change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NodesFrame {
    Snapshot { revision: u64, name: String, order: Vec<String>, nodes: Vec<NodeView> },
    Delta { revision: u64, nodes: Vec<NodeView> },
}

/// Items of a `nodeLog` stream. `data` is base64 of the raw bytes (logs need not be UTF-8).
/// A `snapshot` (re)starts the log of a generation from its first byte; a rerun sends a new one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LogFrame {
    Snapshot {
        generation: u32,
        data: String,
    },
    Append {
        data: String,
    },
    /// The node will write nothing more to this generation's log.
    End,
    /// A subscriber that fell behind lost this many bytes.
    Missed {
        bytes: u64,
    },
}

impl LogFrame {
    pub fn encode_data(bytes: &[u8]) -> String {
        base64_simd::STANDARD.encode_to_string(bytes)
    }
    pub fn decode_data(data: &str) -> Option<Vec<u8>> {
        base64_simd::STANDARD.decode_to_vec(data).ok()
    }
}

/// What a server does with a client's `handshake` request.
#[derive(Debug)]
pub enum HandshakeAnswer {
    /// Same protocol: reply, and serve the client.
    Accept(crate::Message),
    /// Another protocol version: reply with the refusal, then close the link.
    Refuse(crate::Message),
    /// Unreadable params: reply with the error, and wait for a proper handshake.
    Invalid(crate::Message),
}

/// Answers a `handshake` request; `server` names this end in a refusal ("runner", "server").
pub fn answer_handshake(id: serde_json::Value, params: serde_json::Value, server: &str) -> HandshakeAnswer {
    use crate::{BUILD_ID, Message, PROTOCOL_VERSION, RpcError, error_code};
    match serde_json::from_value::<Handshake>(params) {
        Ok(h) if h.protocol == PROTOCOL_VERSION => {
            let reply = Handshake { protocol: PROTOCOL_VERSION, build: BUILD_ID.into() };
            HandshakeAnswer::Accept(Message::ok(id, serde_json::json!(reply)))
        }
        Ok(h) => {
            let message = format!(
                "protocol version mismatch: this {server} ({BUILD_ID}) speaks {PROTOCOL_VERSION}, the client ({}) speaks {}: run the same odu build on both ends",
                h.build, h.protocol
            );
            HandshakeAnswer::Refuse(Message::err(id, RpcError::new(error_code::VERSION_MISMATCH, message)))
        }
        Err(e) => HandshakeAnswer::Invalid(Message::err(id, RpcError::invalid_params(e.to_string()))),
    }
}
