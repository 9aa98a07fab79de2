//! ledgerd: a tamper-evident audit ledger for AI agents' tool calls.
//!
//! The path of an event, from socket to disk: [`server`] takes an RPC and checks the
//! caller's role ([`auth`]), [`intake`] checks the entry and stamps who sent it, [`writer`]
//! gathers waiting entries into one group commit, and [`log`] writes that batch to the
//! [`store`] (entries in [`blocks`] and [`tiles`] of Merkle hashes), syncs it to disk, and only then
//! acknowledges it. [`daemon`] ties it together.

pub mod admin;
pub mod agent_index;
pub mod alerts;
pub mod auth;
pub mod background;
pub mod blocks;
pub mod commit_sizes;
pub mod config;
pub mod connections;
pub mod counters;
pub mod daemon;
pub mod datadir;
pub mod engine;
pub mod failpoint;
pub mod intake;
pub mod log;
pub mod projection;
pub mod publish;
pub mod record;
pub mod redact;
pub mod rotate;
pub mod scorer;
pub mod scoring;
pub mod segments;
pub mod server;
pub mod status;
pub mod store;
pub mod stored;
pub mod tiles;
pub mod watch;
pub mod writer;

pub use config::Config;
pub use daemon::{Ready, run};
