//! The one error type of the storage crate.

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An I/O error on a store file.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The reason.
        source: std::io::Error,
    },
    /// A store file is damaged or is not a store.
    #[error("{path} is not a usable queue store: {reason}")]
    Corrupt {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A store file is a valid database of another kind (another application's, or a
    /// Python snakeMQ queue), left untouched.
    #[error("{path} is not a snakemq queue store: {reason}")]
    Foreign {
        /// The file.
        path: std::path::PathBuf,
        /// What it seems to be instead.
        reason: String,
    },
    /// A store file is already open, in this process or another one.
    #[error("{path} is in use by another store")]
    Locked {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The backend failed for another reason.
    #[error("store backend error: {0}")]
    Backend(String),
}
