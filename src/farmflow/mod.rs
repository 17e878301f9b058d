//! The FarmFlow client and its wire models.

pub mod model;
