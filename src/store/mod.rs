//! The state store: SQLite with versioned migrations (links, journal, runs, conflicts, tokens, hints).

mod model;

pub use model::{Link, LinkState};
