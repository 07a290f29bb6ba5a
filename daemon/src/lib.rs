//! Coldchain edge daemon.
//!
//! Data flows one way: frame -> verify -> store -> evaluate -> alert -> deliver.

pub mod alert;
pub mod assess;
pub mod audit;
pub mod cli;
pub mod config;
pub mod epcis;
pub mod evaluate;
pub mod export;
pub mod forward;
pub mod holdtime;
pub mod http;
pub mod ingest;
pub mod kv;
pub mod lease;
pub mod metrics;
pub mod outbox;
pub mod registry;
pub mod report;
pub mod retention;
pub mod run;
pub mod shipment;
pub mod sites;
pub mod store;
pub mod users;

// The domain engine, re-exported under the paths the daemon has always used.
pub use coldchain_engine::{alarm, mkt, profile, viability};
