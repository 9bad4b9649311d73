//! The surface contract: method names and the shapes of their params and results.

use odu_core::{NodeView, TaskSpec};
use serde::{Deserialize, Serialize};

/// The run's own types, as the `header` cell and `run.start` carry them: one definition, in
/// odu-core, for the server that computes them and the clients that read them.
pub use odu_core::run::{Header, LaneInfo, Phase, Posting, TruncatedLog, Unposted};
pub use odu_core::status::{NodeStatus, Outcome, RunOutcome};

pub const HANDSHAKE: &str = "handshake";
pub const RUN_CONFIGURE: &str = "run.configure";
pub const NODES_GET: &str = "nodes.get";
pub const NODE_LOG_GET: &str = "nodeLog.get";
pub const NODE_RERUN: &str = "node.rerun";
pub const NODE_CANCEL: &str = "node.cancel";
/// Fan-in surface only: the cell of every run the server knows ([`RunsFrame`]).
pub const RUNS_GET: &str = "runs.get";
/// Fan-in surface only: the cell of one run's header ([`HeaderFrame`]).
pub const HEADER_GET: &str = "header.get";
/// Fan-in surface only: start a run ([`StartParams`] → [`Started`]).
pub const RUN_START: &str = "run.start";
/// Fan-in surface only: cancel every node of a run.
pub const RUN_CANCEL: &str = "run.cancel";
/// Fan-in surface only: cancel every node of one lane (`{platform}`).
pub const LANE_CANCEL: &str = "lane.cancel";
/// Lane leg heartbeat: the coordinator calls it every [`HEARTBEAT_EVERY_MS`]; the runner answers
/// at once. A side that hears nothing for [`HEARTBEAT_SILENCE_MS`] treats the link as dead (the
/// runner kills its process groups and exits; the coordinator ends the lane).
pub const PING: &str = "ping";
pub const HEARTBEAT_EVERY_MS: u64 = 5_000;
/// Lane leg: the coordinator is done with the lane. The runner ends every process group it
/// started and removes its scratch directory, says the last it has to say on stderr, and only
/// then answers; it exits once the link closes. With the answer the lane is closed: what its
/// nodes ran in can go without waiting for the runner's exit.
pub const LANE_CLOSE: &str = "lane.close";
pub const HEARTBEAT_SILENCE_MS: u64 = 15_000;
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
    /// The coordinator read this very worktree's justfile on this very host and found no
    /// variable in any module: `_ci-setup` need not ask `just` for them again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_variables: bool,
    /// The `just` the coordinator already asked for its version on this very host: the runner
    /// need not start it again when its own `just` is that same file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub just: Option<KnownJust>,
    /// The whole environment of every process the runner starts (its nodes, and `just` for
    /// its version and variables), in place of the runner's own, with `env` over it. A local
    /// runner gets it: it may have been started before its run, for a run with another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_env: Option<std::collections::BTreeMap<String, String>>,
}

/// A `just` binary whose `--version` is known: where it is, what it said, and which file it was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownJust {
    pub path: String,
    /// Its `--version` line, `just 1.59.0`.
    pub version: String,
    pub file: FileStamp,
}

/// Tells one file apart from any other, and from itself once rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

/// Params naming one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeParams {
    pub id: String,
}

/// `run.start`: what `odu run` was asked, as data. Every field may be left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartParams {
    /// `recipe` or `recipe@platform`; none runs the whole pipeline.
    #[serde(default)]
    pub selectors: Vec<String>,
    #[serde(default)]
    pub flags: StartFlags,
    /// The environment the run sees (the starting shell's: `PATH`, `ODU_HOSTS`, …); absent
    /// means the server's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<std::collections::BTreeMap<String, String>>,
}

/// The flags of `odu run`, by their long names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StartFlags {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platform: Vec<String>,
    /// One-shot host pins, `P=ADDR`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub host: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_deps: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_post: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_snapshot: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_strict: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<usize>,
    /// Cancel the checkout's live run first instead of refusing.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub supersede: bool,
    /// The directory `odu run` was started in, relative to the checkout's top (`pkg`); absent
    /// for the top itself. The run's `just` starts there, in the run's worktree, as `just`
    /// started in that directory would (it looks for the justfile there and above).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Answer yes for the `[confirm]` recipes of the run.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub yes: bool,
}

/// The result of `run.start`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// `<sha7>#<seq>` (`<sha7>+dirty#<seq>` for a live-tree run): the `run` of later calls.
    pub run: String,
    pub label: String,
    pub pipeline: String,
    pub lanes: Vec<LaneInfo>,
    /// Where the hosts came from (a file, `$ODU_HOSTS`, `--host`, or the default).
    pub hosts_source: String,
    /// Lines the starting client should show its user (defaults taken, features absent).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Items of the `header` cell: the header is small, so every item is the whole of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum HeaderFrame {
    Snapshot { revision: u64, header: Header },
}

/// One run in the `runs` cell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run: String,
    pub sha: String,
    pub label: String,
    pub seq: u64,
    /// A live-tree run (`--no-snapshot`) of a dirty checkout.
    pub dirty: bool,
    pub pipeline: String,
    pub outcome: RunOutcome,
    pub lanes: Vec<String>,
    pub started_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
}

/// Items of the `runs` cell: every run the server knows, newest first, then deltas carrying the
/// runs that started or changed (a run not yet listed goes first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RunsFrame {
    Snapshot { revision: u64, runs: Vec<RunSummary> },
    Delta { revision: u64, runs: Vec<RunSummary> },
}

/// Items of the `nodes` cell: a snapshot first (and after a resync), then deltas carrying only
/// the nodes that changed. Revisions increase by one per change; a subscriber that finds
/// several deltas queued gets them as one, with the revision of the last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", try_from = "NodesFrameWire")]
pub enum NodesFrame {
    Snapshot { revision: u64, name: String, order: Vec<String>, nodes: Vec<NodeView> },
    Delta { revision: u64, nodes: Vec<NodeView> },
}

/// How a `NodesFrame` is read: as one flat struct, which serde reads in a single pass (an
/// internally tagged enum buffers every frame into an intermediate tree first, and every
/// attached client reads every frame).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodesFrameWire {
    kind: NodesKind,
    revision: u64,
    name: Option<String>,
    order: Option<Vec<String>>,
    nodes: Vec<NodeView>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum NodesKind {
    Snapshot,
    Delta,
}

impl TryFrom<NodesFrameWire> for NodesFrame {
    type Error = String;

    fn try_from(wire: NodesFrameWire) -> Result<Self, String> {
        match (wire.kind, wire.name, wire.order) {
            (NodesKind::Snapshot, Some(name), Some(order)) => {
                Ok(NodesFrame::Snapshot { revision: wire.revision, name, order, nodes: wire.nodes })
            }
            (NodesKind::Snapshot, _, _) => Err("a nodes snapshot needs `name` and `order`".into()),
            (NodesKind::Delta, None, None) => {
                Ok(NodesFrame::Delta { revision: wire.revision, nodes: wire.nodes })
            }
            (NodesKind::Delta, _, _) => Err("a nodes delta carries no `name` or `order`".into()),
        }
    }
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
pub fn answer_handshake(
    id: serde_json::Value,
    params: &serde_json::value::RawValue,
    server: &str,
) -> HandshakeAnswer {
    use crate::{BUILD_ID, Message, PROTOCOL_VERSION, RpcError, error_code};
    match serde_json::from_str::<Handshake>(params.get()) {
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
