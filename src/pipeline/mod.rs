//! The per-request flow, written against the `Host` seam only.
pub mod request;

pub use request::{Flow, RequestFlow};

#[cfg(test)]
mod tests;
