//! The shared health board: one [`TargetHealth`] per target in proxy-wasm shared data, read
//! by every worker and changed only by compare-and-swap.
//!
//! # Keys
//!
//! `llm_router.h.<upstream>/<model>` for each configured target, where `<upstream>` has `%`
//! and `/` percent-escaped (upstream names may contain `/`, so the first unescaped `/` always
//! ends the upstream). Only targets named in the configuration get keys; requests passed
//! through with a model the configuration does not know all share one key per upstream,
//! `llm_router.h.<upstream>` (no model part, so it cannot collide with a target's key). The key
//! space is therefore fixed by the configuration, whatever model names clients send, and each
//! key holds [`ENCODED_LEN`](super::codec::ENCODED_LEN) bytes. Shared data is never deleted (proxy-wasm has no delete);
//! keys of targets removed by a configuration change stay, bounded by the configurations seen.
//!
//! # Compare-and-swap
//!
//! [`HealthBoard::update`] changes a record only by compare-and-swap, retrying a bounded
//! number of times ([`HealthBoard::max_attempts`]) on lost races; see
//! [`crate::host::shared`] for how, including the first write of a missing key.
//! [`shared::ensure`] creates the keys ahead of traffic (at configuration time).

use super::codec::{decode, encode};
use super::state::TargetHealth;
use crate::host::shared::{self, Record};
use crate::host::{Host, CAS_RETRIES};

pub use crate::host::shared::{SharedError as BoardError, CREATE_CAS};

/// Prefix of every health key.
pub const KEY_PREFIX: &str = "llm_router.h.";

impl Record for TargetHealth {
    fn decode(bytes: &[u8]) -> Option<TargetHealth> {
        decode(bytes)
    }

    fn encode(&self) -> Vec<u8> {
        encode(self)
    }
}

/// Reads and updates target health in shared data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthBoard {
    /// Writes tried per update before giving up.
    pub max_attempts: usize,
}

impl Default for HealthBoard {
    fn default() -> HealthBoard {
        HealthBoard {
            max_attempts: CAS_RETRIES,
        }
    }
}

fn escape_upstream(upstream: &str) -> String {
    upstream.replace('%', "%25").replace('/', "%2F")
}

impl HealthBoard {
    /// The key of a configured target.
    pub fn key(upstream: &str, model: &str) -> String {
        format!("{KEY_PREFIX}{}/{model}", escape_upstream(upstream))
    }

    /// The one key of all passed-through (unconfigured) models of `upstream`.
    pub fn passthrough_key(upstream: &str) -> String {
        format!("{KEY_PREFIX}{}", escape_upstream(upstream))
    }

    /// The stored state, or a fresh one when the key is missing or holds something that does
    /// not decode (another format version, say).
    pub fn read(&self, host: &dyn Host, key: &str) -> Result<TargetHealth, BoardError> {
        shared::read(host, key)
    }

    /// Applies `change` to the stored state by compare-and-swap, retrying on lost races (the
    /// closure may run several times, each time on the latest state). Returns the state written
    /// and the closure's result of the winning run.
    pub fn update<R>(
        &self,
        host: &mut dyn Host,
        key: &str,
        change: impl FnMut(&mut TargetHealth) -> R,
    ) -> Result<(TargetHealth, R), BoardError> {
        shared::update(host, key, self.max_attempts, change)
    }
}
