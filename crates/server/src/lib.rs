//! The `panda-server` program as a library: configuration, logging and the run loop, so the
//! integration tests can load configurations the way the binary does.

pub mod config;
pub mod connections;
pub mod creds;
pub mod datasets;
pub mod ini;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod operator;
pub mod queues;
pub mod serve;
pub mod tls;
