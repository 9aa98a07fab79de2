//! Layer 5, service: what the daemon offers the outside — the gRPC services (`Ledger`,
//! `Admin`), roles, intake and redaction of what writers send, the connection limit, the
//! status report, and publishing signed checkpoints to their targets.
//!
//! May use: every layer below ([`crate::storage`], [`crate::projections`], [`crate::log`],
//! [`crate::scoring`]). Knows nothing of the daemon's lifecycle (start, stop, key
//! rotation) or of the config file reader: its config types live here.

pub mod admin;
pub mod auth;
pub mod connections;
pub mod evidence;
pub mod intake;
pub mod outcome;
pub mod publish;
pub mod redact;
pub mod server;
pub mod status;
