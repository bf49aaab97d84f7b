//! Configuration: `raw` is what operators write, `plan` what requests read.
pub mod capabilities;
pub mod error;
pub mod plan;
pub mod raw;

pub use error::ConfigError;
pub use plan::{compile, Plan};

#[cfg(test)]
pub(crate) mod tests;
