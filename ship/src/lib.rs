//! ledger-ship: ships a ledgerd log to S3-compatible object storage and verifies a
//! fleet's bucket (docs/FLEET.md).
//!
//! A client of the daemon with the auditor role, like a log shipper tailing a file: it
//! reads entries, checkpoints and consistency proofs over the socket and writes immutable
//! objects (Parquet for query engines, the canonical leaves, the signed checkpoints and the
//! proofs between them). The daemon knows nothing of it and links none of this.
//!
//! - [`layout`]: object names in the bucket.
//! - [`columns`]: the Parquet schema, entries → Parquet → typed columns (and leaf bytes).
//! - [`bucket`]: the object store and write-once puts.
//! - [`profile`]: keys and region from the AWS shared config/credentials files.
//! - [`config`]: the shipper's TOML configuration.
//! - [`shipper`]: the shipping loop and its cursor.
//! - [`trust`]: the trust file of `fleet verify`.
//! - [`fleet`]: `fleet verify`.

pub mod bucket;
pub mod columns;
pub mod config;
pub mod fleet;
pub mod layout;
pub mod profile;
pub mod shipper;
pub mod trust;
