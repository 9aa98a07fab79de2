//! Shared by the benchmark binaries in `src/bin/`: [`background::Background`] runs a
//! ledgerd in this process for the benchmarks that need one; [`ledger::build`] makes a
//! synthetic ledger for them to serve.

pub mod background;
pub mod ledger;
