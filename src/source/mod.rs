//! Where updates come from: a Kafka consumer group, or a file replayed line by line. Offsets,
//! commits and rebalances live here and nowhere else.

pub mod file;
pub mod kafka;
