//! Layer 2, projections: what the entries add up to, kept beside them so that reads do not
//! replay the log — the agent index, the hourly counters, the agent registry and policy
//! state — and the query engine that reads entries through them.
//!
//! May use: [`crate::storage`]. Knows nothing of the Merkle tree, the writer thread,
//! scoring or gRPC.

pub mod agent_index;
pub mod counters;
pub mod engine;
pub mod registry;
