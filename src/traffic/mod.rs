//! Traffic for a topic: a file's updates sent unchanged ([`produce`]), or simulated Hatchet runs
//! ([`synthetic`]), for the demo, the tests and the benchmarks (the `produce` subcommand).
//!
//! The service never uses this module: nothing on the way from a message to a metric imports it.

pub mod produce;
pub mod synthetic;
