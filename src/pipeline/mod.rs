//! The per-request flows, written against the `Host` seam only: `request` for the filter on
//! the client's stream, `attempt` for the filter on each failover attempt, `track` for the
//! health tracking both share.
pub mod attempt;
pub mod request;
pub mod track;

pub use attempt::AttemptFlow;
pub use request::{Flow, RequestFlow};

#[cfg(test)]
mod tests;
