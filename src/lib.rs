//! llm-router: an Envoy HTTP filter that classifies and routes OpenAI-style LLM requests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod audit;
pub mod calendar;
pub mod classify;
pub mod clients;
pub mod config;
pub mod endpoint;
pub mod errors;
pub mod glob;
pub mod health;
pub mod host;
pub mod metrics;
pub mod models;
pub mod path;

pub mod pipeline;
pub mod ratelimit;
pub mod rewrite;
pub mod route;
pub mod sha256;
pub mod translate;
pub mod usage;

#[cfg(target_arch = "wasm32")]
mod wasm;
