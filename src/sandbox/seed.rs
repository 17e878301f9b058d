//! Why seed data could not be used: the one error of the seed-file loader ([`super::sample`])
//! and of both fakes' `seed`, kept apart so the fakes need nothing from the sample farm (which
//! is built from their record types).

use std::path::PathBuf;

/// Why seed data could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SeedDataError {
    /// The file could not be read.
    #[error("cannot read seed data file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not seed data in the documented JSON format.
    #[error("seed data file {} is not valid seed data: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause, with line and column.
        source: serde_json::Error,
    },
    /// The data contradicts itself or the sandbox's current state.
    #[error("seed data is inconsistent: {0}")]
    Invalid(String),
}
