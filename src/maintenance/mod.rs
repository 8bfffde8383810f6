//! Maintenance: recompute the state tables from the raw events, and remove old raw
//! events.

pub mod rebuild;
pub mod retention;
