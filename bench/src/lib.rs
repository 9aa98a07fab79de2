//! Shared by the benchmark binaries in `src/bin/`: [`background::Background`] runs a
//! ledgerd in this process for the benchmarks that need one.

pub mod background;
