//! The conformance suite: the same behaviour, checked on every backend.
//!
//! Each case in `conformance/cases.rs` is generic over a store; the `conformance!` macro
//! turns the whole list into `#[test]`s for one backend. A new backend adds one line.

#[path = "conformance/cases.rs"]
mod cases;

use std::path::Path;

use snakemq_storage::{MemoryStore, QueueStore, StorageError};

/// How to get a store of one backend, and what it promises.
pub struct Backend<S> {
    /// Opens the store kept at `path` (a path inside a fresh temporary folder; the same
    /// path again for a restart).
    pub open: fn(&Path) -> Result<S, StorageError>,
    /// Whether reopening the same path finds the messages again.
    pub persistent: bool,
    /// How many received ids it keeps per peer, if it keeps any.
    pub received_bound: Option<usize>,
}

/// Result of a case.
pub type TestResult = Result<(), Box<dyn std::error::Error>>;

macro_rules! conformance {
    ($name:ident, $backend:expr) => {
        mod $name {
            use super::*;

            fn backend() -> Backend<impl QueueStore> {
                $backend
            }

            #[test]
            fn push_read_and_page() -> TestResult {
                cases::push_read_and_page(&backend())
            }

            #[test]
            fn caller_assigned_sequence_numbers() -> TestResult {
                cases::caller_assigned_sequence_numbers(&backend())
            }

            #[test]
            fn remove_front_middle_and_unknown() -> TestResult {
                cases::remove_front_middle_and_unknown(&backend())
            }

            #[test]
            fn deadlines_expire_with_protection() -> TestResult {
                cases::deadlines_expire_with_protection(&backend())
            }

            #[test]
            fn restart_keeps_everything() -> TestResult {
                cases::restart_keeps_everything(&backend())
            }

            #[test]
            fn many_peers_interleaved() -> TestResult {
                cases::many_peers_interleaved(&backend())
            }

            #[test]
            fn large_payloads() -> TestResult {
                cases::large_payloads(&backend())
            }

            #[test]
            fn a_hundred_thousand_messages() -> TestResult {
                cases::many_messages(&backend(), 100_000)
            }

            /// Run with `cargo test --release -- --ignored`: about 10 times the default
            /// volume, too slow for a debug build.
            #[test]
            #[ignore = "a million messages: slow in debug builds, run in release"]
            fn a_million_messages() -> TestResult {
                cases::many_messages(&backend(), 1_000_000)
            }

            #[test]
            fn write_batch_is_applied_whole() -> TestResult {
                cases::write_batch_is_applied_whole(&backend())
            }

            #[test]
            fn received_ids_bounded_and_ordered() -> TestResult {
                cases::received_ids_bounded_and_ordered(&backend())
            }
        }
    };
}

conformance!(
    memory,
    Backend {
        open: |_| Ok(MemoryStore::new()),
        persistent: false,
        received_bound: None,
    }
);

#[cfg(feature = "sqlite")]
conformance!(
    sqlite,
    Backend {
        open: |path| {
            snakemq_storage::SqliteStore::open(
                path,
                snakemq_storage::SqliteOptions {
                    received_limit: 1000,
                    ..Default::default()
                },
            )
        },
        persistent: true,
        received_bound: Some(1000),
    }
);

#[cfg(feature = "rocksdb")]
conformance!(
    rocks,
    Backend {
        open: |path| {
            snakemq_storage::RocksStore::open(
                path,
                snakemq_storage::RocksOptions {
                    received_limit: 1000,
                    ..Default::default()
                },
            )
        },
        persistent: true,
        received_bound: Some(1000),
    }
);
