//! odu's wire: one contract on both legs (a lane's stdio and `.ci/odu.sock`).
//!
//! Every message is a JSON-RPC 2.0 object framed as one line: `base64(json) + "\n"`. Base64
//! keeps frames free of newlines, so a shell banner or motd line on a remote stdout is simply an
//! undecodable line that the reader logs and skips. The first exchange is a [`HANDSHAKE`] that
//! carries [`PROTOCOL_VERSION`]; a peer of another version is refused with both versions named.
//!
//! Streams (cells and logs) are requests whose items arrive as `$/item` notifications tagged
//! with the request id; the final response to the request ends the stream. A client stops a
//! stream with a `$/cancel` notification.

pub mod contract;
pub mod frame;
pub mod log;
pub mod message;

pub use contract::*;
pub use frame::{FrameError, MAX_FRAME_BYTES, decode_line, encode_frame};
pub use log::{LogChunk, LogItem, item_frame, log_frame_json, log_item_frame};
pub use message::{Message, RawParams, RpcError, error_code};

/// Bumped whenever the meaning or shape of any message changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// Identifies the build on both ends of a link, reported in the handshake.
pub const BUILD_ID: &str = concat!("odu ", env!("CARGO_PKG_VERSION"));
