//! Integration tests: the real binary over real HTTP against a real Postgres (a fresh
//! database per test). One test binary, modules per concern.

mod agents;
mod backfill;
mod browser;
mod callbacks;
mod cli;
mod conformance;
mod conversations;
mod crash;
mod dashboard;
mod faults;
mod harness;
mod ingest;
mod jobs;
mod live;
mod oai;
mod outage;
mod poison;
mod proxy;
mod reconcile;
mod sync;
mod twilio_stub;
mod upgrade;
