//! Layer 1, storage: the entries' segment files, the sled database and the data dir.
//! Segments, the stored entry form, sled trees, Merkle hash tiles, the codecs of older
//! formats (moved over on open), test-only crash points, and the files beside the store
//! (keys, permissions).
//!
//! May use: nothing else in the daemon (only `ledger_proto` for the entry type).
//! Knows nothing of gRPC, roles, policies, scoring or the Merkle log's checkpoints.

pub mod blocks;
pub mod datadir;
pub mod failpoint;
pub mod record;
pub mod segments;
pub mod store;
pub mod stored;
pub mod tiles;
