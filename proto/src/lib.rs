//! The contract both ends of ledgerd agree on, and nothing that does I/O.
//!
//! - [`pb`]: the generated protobuf/gRPC types of `ledger.v1`;
//! - [`leaf`]: the canonical leaf bytes of an entry and their hash;
//! - [`merkle`]: RFC 9162-shaped BLAKE3 tree hashing, proof generation and verification;
//! - [`note`]: the C2SP signed checkpoint note (Ed25519);
//! - [`manifest`]: the signed manifest body of an evidence bundle;
//! - [`rotation`]: the old key's signed statement naming its successor.

pub mod leaf;
pub mod manifest;
pub mod merkle;
pub mod note;
pub mod rotation;
pub mod wire;

/// Lowercase hex of bytes (hashes, key IDs), as every message and output shows them.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Generated code for the `ledger.v1` protobuf package.
#[allow(clippy::all, missing_docs)]
/// Trailer of a failed `AppendStream`: how many of its entries were appended before it
/// stopped (decimal).
pub const APPENDED_COUNT_TRAILER: &str = "ledger-appended-count";
/// Trailer of a failed `AppendStream`: the seq of the last of its entries appended, when
/// any was (decimal).
pub const APPENDED_LAST_SEQ_TRAILER: &str = "ledger-appended-last-seq";

pub mod pb {
    tonic::include_proto!("ledger.v1");
}

/// Lowercase names of kinds and decisions, as used in queries, tables and CSV.
mod names {
    use crate::pb::{Decision, Kind};

    const KINDS: [(Kind, &str); 13] = [
        (Kind::Unspecified, "unspecified"),
        (Kind::Decision, "decision"),
        (Kind::Outcome, "outcome"),
        (Kind::AgentRegistered, "agent_registered"),
        (Kind::AgentUpdated, "agent_updated"),
        (Kind::AgentRetired, "agent_retired"),
        (Kind::PolicyChanged, "policy_changed"),
        (Kind::DaemonStarted, "daemon_started"),
        (Kind::DaemonStopped, "daemon_stopped"),
        (Kind::KeyRotated, "key_rotated"),
        (Kind::AccessRefused, "access_refused"),
        (Kind::ShimHeartbeat, "shim_heartbeat"),
        (Kind::EvidenceExported, "evidence_exported"),
    ];

    impl Kind {
        /// The lowercase name (`decision`, `policy_changed`, …).
        pub fn name(self) -> &'static str {
            KINDS.iter().find(|(k, _)| *k == self).map_or("unspecified", |(_, n)| n)
        }
        /// The kind with this lowercase name.
        pub fn from_name(name: &str) -> Option<Kind> {
            KINDS.iter().find(|(_, n)| *n == name).map(|(k, _)| *k)
        }
        /// The name of a raw enum value as stored in an entry.
        pub fn name_of(raw: i32) -> &'static str {
            Kind::try_from(raw).unwrap_or(Kind::Unspecified).name()
        }
    }

    impl Decision {
        /// `allow`, `deny`, or empty when unset.
        pub fn name(self) -> &'static str {
            match self {
                Decision::Unspecified => "",
                Decision::Allow => "allow",
                Decision::Deny => "deny",
            }
        }
        /// The name of a raw enum value as stored in an entry.
        pub fn name_of(raw: i32) -> &'static str {
            Decision::try_from(raw).unwrap_or(Decision::Unspecified).name()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn every_kind_has_a_name_that_maps_back() {
            for (k, n) in KINDS {
                assert_eq!(k.name(), n);
                assert_eq!(Kind::from_name(n), Some(k));
            }
        }
    }
}
