//! Health of provider targets (upstream + model), shared by all Envoy workers.
//!
//! The pure core of provider health tracking; the request path wires it in.
//!
//! - [`state`]: [`TargetHealth`], the counters of one target (requests, successes, failures
//!   by class, consecutive failures, in flight, latency and TTFB averages, cooldown) and its
//!   cooldown / half-open circuit, driven by [`HealthPolicy`] and per-target [`Budget`]s.
//! - [`board`]: [`HealthBoard`], which keeps one `TargetHealth` per configured target in
//!   proxy-wasm shared data and changes it only by compare-and-swap, so no update is lost.
//! - [`retry_headers`]: `Retry-After`, OpenAI and Anthropic rate-limit headers turned into
//!   "cool down until".
//! - [`ewma`], [`window`]: the fixed-size arithmetic (moving averages, sliding windows).
//! - [`codec`]: the fixed-size binary form in shared data.
//!
//! Memory is bounded whatever clients send: one fixed-size record
//! ([`codec::ENCODED_LEN`] bytes) per configured target plus one per upstream for
//! passed-through models; windows have a fixed number of buckets; counters saturate.
//!
//! Flow of one request:
//!
//! 1. Read each candidate's state ([`HealthBoard::read`]) and its
//!    [`TargetHealth::availability`]; skip unavailable ones, or, when none is usable, take the
//!    one that recovers soonest ([`soonest`]).
//! 2. [`HealthBoard::update`] the chosen one with [`TargetHealth::admit`] (which claims the
//!    half-open probe when it is one, and counts the start); if another worker claimed the
//!    probe first, the admission is refused and the next candidate is tried.
//! 3. At the end, [`HealthBoard::update`] with [`TargetHealth::on_finish`] and the
//!    [`Outcome`], whose rate-limit time comes from [`retry_headers::cooldown_until`].

pub mod board;
pub mod codec;
pub mod deferred;
pub mod ewma;
pub mod retry_headers;
pub mod state;
pub mod window;

pub use board::{BoardError, HealthBoard};
pub use ewma::{Alpha, Ewma};
pub use state::{
    soonest, Admission, Availability, Budget, Circuit, HealthPolicy, Outcome, TargetHealth,
    Unhealthy,
};
pub use window::Window;

#[cfg(test)]
mod tests;
