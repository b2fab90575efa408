//! The shared core of Marketing IQ.
//!
//! Every service (producers, stream processors, sink, query API) is a thin binary over a library;
//! what they all need — settings, the tenant and platform types, clients for Kafka, the schema
//! registry, ClickHouse and Redis, logging and shutdown — is defined here once.

pub mod anomaly;
pub mod cli;
pub mod clients;
pub mod secret;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod tenant;
pub mod warehouse;

pub use settings::Settings;
pub use tenant::{Platform, TenantId};
