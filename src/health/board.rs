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

use std::rc::Rc;

use super::codec::{decode, encode};
use super::deferred::Deferred;
use super::state::{HealthPolicy, Outcome, TargetHealth};
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
#[derive(Debug, Clone)]
pub struct HealthBoard {
    /// Writes tried per update before giving up.
    pub max_attempts: usize,
    /// This worker's finishes that wait for its next write (none: every finish is written).
    deferred: Option<Rc<Deferred>>,
}

impl Default for HealthBoard {
    fn default() -> HealthBoard {
        HealthBoard {
            max_attempts: CAS_RETRIES,
            deferred: None,
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

    /// [`HealthBoard::read`] keeping the token, for [`HealthBoard::update_from`].
    pub fn read_for_update(
        &self,
        host: &dyn Host,
        key: &str,
    ) -> Result<shared::Read<TargetHealth>, BoardError> {
        shared::read_for_update(host, key)
    }

    /// `h` (read from the board for `key`) as this worker knows it: with its finishes that wait.
    pub fn with_waiting(&self, key: &str, mut h: TargetHealth) -> TargetHealth {
        if let Some(deferred) = &self.deferred {
            deferred.apply_waiting(key, &mut h);
        }
        h
    }

    /// A board whose successful finishes wait in `deferred` (per worker; see
    /// [`super::deferred`]).
    pub fn with_deferred(mut self, deferred: Rc<Deferred>) -> HealthBoard {
        self.deferred = Some(deferred);
        self
    }

    /// [`HealthBoard::update`] starting from a state read earlier in the request (one write
    /// when no other worker wrote since). The finishes waiting for `key` are written with it.
    pub fn update_from<R>(
        &self,
        host: &mut dyn Host,
        key: &str,
        first: Option<shared::Read<TargetHealth>>,
        mut change: impl FnMut(&mut TargetHealth) -> R,
    ) -> Result<(TargetHealth, R), BoardError> {
        let Some(deferred) = &self.deferred else {
            return shared::update_from(host, key, self.max_attempts, first, change);
        };
        let waiting = deferred.take(key);
        let written = shared::update_from(host, key, self.max_attempts, first, |h| {
            deferred.apply(&waiting, h);
            change(h)
        });
        if written.is_err() {
            deferred.put_back(key, waiting);
        }
        written
    }

    /// A request to `key` ended: its outcome is written, or, with `may_wait` (from
    /// [`super::deferred::can_wait`]), kept for this worker's next write. Returns whether a
    /// cooldown began (never for a finish that waits).
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        &self,
        host: &mut dyn Host,
        key: &str,
        outcome: Outcome,
        probe: bool,
        now_ms: u64,
        policy: &HealthPolicy,
        may_wait: bool,
    ) -> Result<bool, BoardError> {
        if let Some(deferred) = &self.deferred {
            if may_wait && deferred.keep(key, outcome, now_ms) {
                return Ok(false);
            }
        }
        self.update(host, key, |h| {
            let before = h.cooldown_until_ms;
            h.on_finish(outcome, probe, now_ms, policy);
            before <= now_ms && h.cooldown_until_ms > now_ms
        })
        .map(|(_, entered)| entered)
    }

    /// Writes every finish that waits (the root context's tick). Failures are logged; what
    /// was not written waits for the next tick.
    pub fn flush_deferred(&self, host: &mut dyn Host) {
        let Some(deferred) = &self.deferred else {
            return;
        };
        for key in deferred.keys() {
            if let Err(e) = self.update(host, &key, |_| ()) {
                log::debug!("llm-router: health of {key} not written yet: {e}");
            }
        }
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
        self.update_from(host, key, None, change)
    }
}
