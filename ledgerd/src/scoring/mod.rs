//! Layer 4, scoring and the write path: the severity scorer and its baselines, the
//! scoring of each commit, the group-commit writer thread that owns the log, and the feed
//! of committed entries that `Watch` and alerts subscribe to.
//!
//! May use: [`crate::storage`], [`crate::projections`], [`crate::log`]. Knows nothing of
//! gRPC, sockets, roles or the config file (its config types live here).

pub mod commit;
pub mod commit_sizes;
pub mod scorer;
pub mod watch;
pub mod writer;
