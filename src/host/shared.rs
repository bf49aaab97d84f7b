//! Compare-and-swap updates of fixed-size records in proxy-wasm shared data, shared by every
//! worker of one `vm_id`: the health board and the client ledger both change their records
//! only through [`update`].
//!
//! [`update`] reads value and CAS token, applies the change to the decoded record and writes
//! back with that token. When another worker wrote in between, the write fails with
//! `CasMismatch` and the update starts over from the new value: no update is lost, and the
//! change function may run several times (it must only depend on the record it is given).
//! After `max_attempts` lost races it gives up with [`SharedError::Contended`].
//!
//! A key that does not exist yet has no token, and proxy-wasm treats a missing or zero token
//! as "write unconditionally". The host (proxy-wasm-cpp-host's `SharedData::set`) ignores the
//! token when it inserts a new key, but checks it against an existing one; so the first write
//! of a missing key passes [`CREATE_CAS`], a token no live entry is expected to have (tokens
//! are handed out counting up from 1): the write inserts the key if it is still missing, and
//! fails with `CasMismatch` if another worker created it in the meantime, in which case we
//! re-read and apply on top of that. A host that refuses tokens for missing keys (as
//! `MockHost` does) is detected by the key still missing after the mismatch, and then written
//! unconditionally; only there can two first writes race. Creating the keys ahead of traffic
//! ([`ensure`], at configuration time) makes this moot.

use std::fmt;

use super::{Host, HostError};

/// Token for the first write of a missing key (see the module docs).
pub const CREATE_CAS: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedError {
    /// A shared-data call failed other than by CAS mismatch.
    Host(HostError),
    /// Lost the CAS race this many times in a row.
    Contended { attempts: usize },
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SharedError::Host(e) => write!(f, "shared data: {e}"),
            SharedError::Contended { attempts } => {
                write!(f, "lost the shared-data CAS race {attempts} times")
            }
        }
    }
}

impl std::error::Error for SharedError {}

/// How a record is stored: fixed-size bytes that either decode or are treated as absent.
pub trait Record: Default {
    fn decode(bytes: &[u8]) -> Option<Self>;
    fn encode(&self) -> Vec<u8>;
}

/// The stored record, or a fresh one when the key is missing or holds something that does
/// not decode (another format version, say).
pub fn read<T: Record>(host: &dyn Host, key: &str) -> Result<T, SharedError> {
    read_for_update(host, key).map(|r| r.record)
}

/// A record as one `shared_data` call gave it, with what a compare-and-swap write of it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Read<T> {
    pub record: T,
    cas: Option<u32>,
    missing: bool,
}

/// [`read`], keeping the token: [`update_from`] can then write without reading again.
pub fn read_for_update<T: Record>(host: &dyn Host, key: &str) -> Result<Read<T>, SharedError> {
    let (value, cas) = host.shared_data(key).map_err(SharedError::Host)?;
    Ok(Read {
        missing: value.is_none(),
        record: value.as_deref().and_then(T::decode).unwrap_or_default(),
        cas,
    })
}

/// Creates `key` with a fresh record unless it exists (an existing value is left alone).
pub fn ensure<T: Record>(
    host: &mut dyn Host,
    key: &str,
    max_attempts: usize,
) -> Result<(), SharedError> {
    let (value, _) = host.shared_data(key).map_err(SharedError::Host)?;
    if value.is_some() {
        return Ok(());
    }
    update::<T, ()>(host, key, max_attempts, |_| ()).map(|_| ())
}

/// Applies `change` to the stored record by compare-and-swap, retrying on lost races (the
/// closure may run several times, each time on the latest record). Returns the record written
/// and the closure's result of the winning run.
pub fn update<T: Record, R>(
    host: &mut dyn Host,
    key: &str,
    max_attempts: usize,
    change: impl FnMut(&mut T) -> R,
) -> Result<(T, R), SharedError> {
    update_from(host, key, max_attempts, None, change)
}

/// [`update`] whose first attempt starts from `first`, a [`read_for_update`] of the same key
/// made earlier in the request: uncontended, the update is one write.
pub fn update_from<T: Record, R>(
    host: &mut dyn Host,
    key: &str,
    max_attempts: usize,
    mut first: Option<Read<T>>,
    mut change: impl FnMut(&mut T) -> R,
) -> Result<(T, R), SharedError> {
    let attempts = max_attempts.max(1);
    let mut create_refused = false;
    for _ in 0..attempts {
        let read = match first.take() {
            Some(read) => read,
            None => read_for_update(host, key)?,
        };
        let Read {
            mut record,
            cas,
            missing,
        } = read;
        let result = change(&mut record);
        let token = match cas {
            Some(c) if c != 0 => Some(c),
            // An existing key without a token cannot be protected: best effort.
            _ if !missing => None,
            _ if create_refused => None,
            _ => Some(CREATE_CAS),
        };
        match host.set_shared_data(key, &record.encode(), token) {
            Ok(()) => return Ok((record, result)),
            Err(HostError::CasMismatch) => {
                if missing && token == Some(CREATE_CAS) {
                    // Either another worker created the key (the next read sees it) or
                    // the host wants no token for a new key (the next read still misses).
                    create_refused = true;
                }
            }
            Err(e) => return Err(SharedError::Host(e)),
        }
    }
    Err(SharedError::Contended { attempts })
}
