//! The protocol as every odu process speaks it (SPEC §6): framing over any (reader, writer),
//! the protocol client, cells (snapshot, then deltas, to many subscribers), and the checkout's
//! socket.

pub mod cell;
pub mod client;
pub mod socket;
pub mod wire;
