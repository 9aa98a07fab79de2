//! ledgerd: a tamper-evident audit ledger for AI agents' tool calls.
//!
//! The path of an event, from socket to disk: [`service::server`] takes an RPC and checks
//! the caller's role ([`service::auth`]), [`service::intake`] checks the entry and stamps
//! who sent it, [`scoring::writer`] gathers waiting entries into one group commit, and
//! [`log::merkle`] writes that batch to the [`storage::store`] (entries in
//! [`storage::blocks`] and [`storage::tiles`] of Merkle hashes), syncs it to disk, and only
//! then acknowledges it. [`daemon`] ties it together.
//!
//! Layers, each a folder, each allowed to use only the ones before it (checked by the
//! `layers` test, `tests/tests/layers.rs`):
//! [`storage`] → [`projections`] → [`log`] → [`scoring`] → [`service`] → the daemon's
//! lifecycle here at the top ([`daemon`], [`config`], [`rotate`], [`alerts`]).

pub mod storage;

pub mod projections;

pub mod log;

pub mod scoring;

pub mod service;

pub mod alerts;
pub mod config;
pub mod daemon;
pub mod rotate;
pub mod socket_path;

pub use config::Config;
pub use daemon::{Ready, run, runtime_builder};

/// The allocator of every program that runs the daemon (the `ledgerd` binary, and the
/// benchmarks and tests that embed it, so that they measure what it runs): mimalloc.
/// Group-by queries and the gRPC path allocate and free many small values; glibc's
/// `malloc_consolidate` and free-list unlinking were a third of a counting query's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
