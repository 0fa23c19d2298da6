//! Harnesses shared by the fuzz targets.
//!
//! The logic lives in a library, not in the `fuzz_targets/` binaries, so that `cargo test`
//! (stable, no libFuzzer) can replay the committed seeds and any saved crash input through
//! exactly the code the fuzzer runs.
#![forbid(unsafe_code)]

pub mod connection;
pub mod stream;

#[cfg(test)]
mod seeds;
