//! Forwarding: sessions, participants, feeds and subscriptions of one core, as a sans-IO state
//! machine ([`worker::Worker`]).

pub mod allocation;
pub mod consumer;
pub mod copy;
pub mod cross_core;
pub mod data;
pub mod deadlines;
pub mod feed;
pub mod link_quality;
pub mod participant;
pub mod pool;
pub mod repair_wait;
pub mod svc;
pub mod transport;
pub mod worker;
