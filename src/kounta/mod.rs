//! The Kounta-style CRM client and its wire models.

pub mod model;
