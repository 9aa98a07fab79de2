//! Layer 3, the log: the append-only BLAKE3 Merkle log over the store — appending a batch
//! (with its projections) durably, recovery at open, proofs and signed checkpoints.
//!
//! May use: [`crate::storage`], [`crate::projections`]. Knows nothing of scoring, the
//! writer thread, gRPC, roles or the config file.

pub mod merkle;
