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
//! [`HealthBoard::update`] reads value and CAS token, applies the change to the decoded state,
//! and writes back with that token. When another worker wrote in between, the write fails with
//! `CasMismatch`, and the update starts over from the new value: no update is lost, and the
//! change function may run several times (it must only depend on the state it is given). After
//! [`HealthBoard::max_attempts`] lost races it gives up with [`BoardError::Contended`].
//!
//! A key that does not exist yet has no token, and proxy-wasm treats a missing or zero token as
//! "write unconditionally". The host (proxy-wasm-cpp-host's `SharedData::set`) ignores the
//! token when it inserts a new key, but checks it against an existing one; so the first write
//! of a missing key passes [`CREATE_CAS`], a token no live entry is expected to have (tokens
//! are handed out counting up from 1): the write inserts the key if it is still missing, and
//! fails with `CasMismatch` if another worker created it in the meantime, in which case we
//! re-read and apply on top of that. A host that refuses tokens for missing keys (as
//! `MockHost` does) is detected by the key still missing after the mismatch, and then written
//! unconditionally; only there can two first writes race. [`HealthBoard::ensure`] creates the
//! keys ahead of traffic (at configuration time), which makes this moot.

use std::fmt;

use super::codec::{decode, encode};
use super::state::TargetHealth;
use crate::host::{Host, HostError, CAS_RETRIES};

/// Prefix of every health key.
pub const KEY_PREFIX: &str = "llm_router.h.";

/// Token for the first write of a missing key (see the module docs).
pub const CREATE_CAS: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoardError {
    /// A shared-data call failed other than by CAS mismatch.
    Host(HostError),
    /// Lost the CAS race this many times in a row.
    Contended { attempts: usize },
}

impl fmt::Display for BoardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoardError::Host(e) => write!(f, "health board: {e}"),
            BoardError::Contended { attempts } => write!(
                f,
                "health board: lost the shared-data CAS race {attempts} times"
            ),
        }
    }
}

impl std::error::Error for BoardError {}

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
        let (value, _) = host.shared_data(key).map_err(BoardError::Host)?;
        Ok(value.as_deref().and_then(decode).unwrap_or_default())
    }

    /// Creates `key` with a fresh state unless it exists (an existing value is left alone).
    pub fn ensure(&self, host: &mut dyn Host, key: &str) -> Result<(), BoardError> {
        let (value, _) = host.shared_data(key).map_err(BoardError::Host)?;
        if value.is_some() {
            return Ok(());
        }
        self.update(host, key, |_| ()).map(|_| ())
    }

    /// Applies `change` to the stored state by compare-and-swap, retrying on lost races (the
    /// closure may run several times, each time on the latest state). Returns the state written
    /// and the closure's result of the winning run.
    pub fn update<R>(
        &self,
        host: &mut dyn Host,
        key: &str,
        mut change: impl FnMut(&mut TargetHealth) -> R,
    ) -> Result<(TargetHealth, R), BoardError> {
        let attempts = self.max_attempts.max(1);
        let mut create_refused = false;
        for _ in 0..attempts {
            let (value, cas) = host.shared_data(key).map_err(BoardError::Host)?;
            let missing = value.is_none();
            let mut state = value.as_deref().and_then(decode).unwrap_or_default();
            let result = change(&mut state);
            let token = match cas {
                Some(c) if c != 0 => Some(c),
                // An existing key without a token cannot be protected: best effort.
                _ if !missing => None,
                _ if create_refused => None,
                _ => Some(CREATE_CAS),
            };
            match host.set_shared_data(key, &encode(&state), token) {
                Ok(()) => return Ok((state, result)),
                Err(HostError::CasMismatch) => {
                    if missing && token == Some(CREATE_CAS) {
                        // Either another worker created the key (the next read sees it) or
                        // the host wants no token for a new key (the next read still misses).
                        create_refused = true;
                    }
                }
                Err(e) => return Err(BoardError::Host(e)),
            }
        }
        Err(BoardError::Contended { attempts })
    }
}
