//! One module per platform: its requests, its error semantics, and the mapping of its fields
//! into the common raw records. Each `extract` publishes into the run's open transaction.

pub mod fields;
pub mod ga4;
pub mod google_ads;
pub mod meta;
