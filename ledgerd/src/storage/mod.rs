//! Layer 1, storage: the sled database and the data dir. Trees, entry blocks, Merkle hash
//! tiles, the stored record codec, and the files beside the store (keys, permissions).
//!
//! May use: nothing else in the daemon (only `ledger_proto` for the entry type).
//! Knows nothing of gRPC, roles, policies, scoring or the Merkle log's checkpoints.

pub mod blocks;
pub mod datadir;
pub mod record;
pub mod store;
pub mod tiles;
