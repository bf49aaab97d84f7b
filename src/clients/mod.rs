//! Client keys, per-client limits and policies (`clients` in the configuration).
//!
//! - [`ClientsPlan`]: the compiled `clients` section: keys by SHA-256 hash (the configuration
//!   never holds a key), names, allowed models (globs), limits and routing profiles.
//! - [`ledger`]: each client's requests and tokens over a sliding minute and its spend this
//!   month, one fixed-size record per configured client in shared data, changed only by
//!   compare-and-swap, so the limits hold across all Envoy workers.
//! - [`stats`]: per-client Envoy stats, labelled by client name.
//!
//! A request is identified by the header an auth filter in front of the router verified
//! (`identity_header`, holding a client name) or else by its key (`authorization: Bearer`,
//! `x-api-key`, `api-key`), hashed and looked up. Hashing first also means that the lookup
//! takes no time that depends on how much of a key matched.

pub mod ledger;
pub mod stats;

use std::collections::HashMap;

use crate::config::plan::{check_header_name, glob_list};
use crate::config::raw::{KeyHashes, Profile, RawClientKey, RawClients, Strategy};
use crate::config::ConfigError;
use crate::glob::Glob;
use crate::sha256::sha256;

pub use ledger::{ClientUsage, Limited, Quota};
pub use stats::ClientStats;

/// The request headers a client key may come in, in the order they are looked at.
pub const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "api-key"];

/// Keys one client may have at once (e.g. the old and the new while rotating).
const MAX_KEYS_PER_CLIENT: usize = 8;

/// Longest client name: it is a stat label and a shared-data key.
const MAX_NAME_BYTES: usize = 64;

#[derive(Debug)]
pub struct ClientsPlan {
    /// Requests without a known client are refused (401).
    pub required: bool,
    /// Lower case.
    pub identity_header: Option<String>,
    pub clients: Vec<Client>,
    by_hash: HashMap<[u8; 32], usize>,
    by_name: HashMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub name: String,
    /// `None`: every model.
    pub models: Option<Vec<Glob>>,
    pub limits: Limits,
    pub profile: Option<Profile>,
    /// The client's record in shared data ([`ledger::key`]).
    pub ledger_key: String,
}

/// A client's limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    /// Millionths of the price currency per calendar month.
    pub monthly_budget_micro: Option<u64>,
}

impl Limits {
    /// Whether anything is counted for this client in shared data.
    pub fn any(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some() || self.monthly_budget_micro.is_some()
    }

    /// Whether the end of a request changes the ledger (tokens or spend).
    pub fn settles(&self) -> bool {
        self.tpm.is_some() || self.monthly_budget_micro.is_some()
    }
}

/// Why a request has no client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No key and no identity header.
    Missing,
    /// A key or identity that no client has.
    Unknown,
}

impl ClientsPlan {
    pub fn compile(raw: &RawClients, field: &str) -> Result<ClientsPlan, ConfigError> {
        let identity_header = match &raw.identity_header {
            Some(h) => {
                let name = h.to_ascii_lowercase();
                let field = format!("{field}.identity_header");
                check_header_name(&name, &field)?;
                if CREDENTIAL_HEADERS.contains(&name.as_str())
                    || matches!(name.as_str(), "content-length" | "content-type" | "host")
                {
                    return Err(ConfigError::new(
                        field,
                        format!("`{name}` cannot carry a verified client name; use a header of its own (e.g. x-client-name)"),
                    ));
                }
                Some(name)
            }
            None => None,
        };
        let mut plan = ClientsPlan {
            required: raw.required.unwrap_or(true),
            identity_header,
            clients: Vec::with_capacity(raw.keys.len()),
            by_hash: HashMap::with_capacity(raw.keys.len()),
            by_name: HashMap::with_capacity(raw.keys.len()),
        };
        for (i, key) in raw.keys.iter().enumerate() {
            let field = format!("{field}.keys[{i}]");
            let client = compile_client(key, &field, plan.identity_header.is_some())?;
            if plan.by_name.contains_key(&client.name) {
                return Err(ConfigError::new(
                    format!("{field}.name"),
                    format!("duplicate client name `{}`", client.name),
                ));
            }
            let hashes: Vec<(String, &String)> = match &key.key_sha256 {
                None => Vec::new(),
                Some(KeyHashes::One(hex)) => vec![(format!("{field}.key_sha256"), hex)],
                Some(KeyHashes::Many(list)) => {
                    if list.is_empty() || list.len() > MAX_KEYS_PER_CLIENT {
                        return Err(ConfigError::new(
                            format!("{field}.key_sha256"),
                            format!("give 1 to {MAX_KEYS_PER_CLIENT} hashes"),
                        ));
                    }
                    list.iter()
                        .enumerate()
                        .map(|(j, hex)| (format!("{field}.key_sha256[{j}]"), hex))
                        .collect()
                }
            };
            for (at, hex) in hashes {
                let hash = parse_sha256(hex).ok_or_else(|| {
                    ConfigError::new(
                        at.clone(),
                        "must be 64 hex digits: the SHA-256 of the key (make key-hash)",
                    )
                })?;
                if let Some(other) = plan.by_hash.insert(hash, i) {
                    return Err(ConfigError::new(
                        at,
                        format!("the same key as clients.keys[{other}]"),
                    ));
                }
            }
            plan.by_name.insert(client.name.clone(), i);
            plan.clients.push(client);
        }
        Ok(plan)
    }

    pub fn get(&self, index: usize) -> Option<&Client> {
        self.clients.get(index)
    }

    /// The client of a request: by the verified `identity` header when the request has one,
    /// else by its `credential` (the header value [`credential`] picked). `Ok(None)`:
    /// anonymous, which only a configuration with `required: false` lets through.
    pub fn identify(
        &self,
        identity: Option<&str>,
        credential: Option<&str>,
    ) -> Result<Option<usize>, AuthError> {
        let found = match (identity, credential) {
            (Some(name), _) => Some(self.by_name.get(name.trim()).copied()),
            (None, Some(value)) => {
                let key = bare_credential(value);
                (!key.is_empty()).then(|| self.by_hash.get(&sha256(key.as_bytes())).copied())
            }
            (None, None) => None,
        };
        match found {
            Some(Some(index)) => Ok(Some(index)),
            _ if !self.required => Ok(None),
            Some(None) => Err(AuthError::Unknown),
            None => Err(AuthError::Missing),
        }
    }
}

impl Client {
    /// Whether the client may ask for `model` (a requested name: alias or model id).
    pub fn allows_model(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|globs| globs.iter().any(|g| g.matches(model)))
    }

    /// Whether `auto` routing may send the client to `model` of `upstream`: the model id or
    /// `upstream/model` matches one of its globs.
    pub fn allows_target(&self, upstream: &str, model: &str) -> bool {
        let Some(globs) = &self.models else {
            return true;
        };
        let qualified = format!("{upstream}/{model}");
        globs
            .iter()
            .any(|g| g.matches(model) || g.matches(&qualified))
    }

    /// The strategy of its profile, if it has one.
    pub fn strategy(&self) -> Option<Strategy> {
        self.profile.map(Profile::strategy)
    }
}

/// The credential header value a request's key is read from: `authorization` when it holds a
/// `Bearer` key, else `x-api-key`, else `api-key`; empty values (and other authorization
/// schemes, such as `Basic`) do not count. `header` reads a request header.
pub fn credential(header: impl Fn(&str) -> Option<String>) -> Option<String> {
    CREDENTIAL_HEADERS.iter().find_map(|name| {
        let value = header(name)?;
        let bearer = value
            .trim_start()
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("bearer "));
        let counts = (*name != "authorization" || bearer) && !bare_credential(&value).is_empty();
        counts.then_some(value)
    })
}

/// The key itself, without the `Bearer` scheme of an `authorization` header.
pub fn bare_credential(value: &str) -> &str {
    let v = value.trim_start();
    match v.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => v[7..].trim(),
        _ => v.trim_end(),
    }
}

fn compile_client(
    raw: &RawClientKey,
    field: &str,
    has_identity_header: bool,
) -> Result<Client, ConfigError> {
    let name = &raw.name;
    let name_ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..");
    if !name_ok {
        return Err(ConfigError::new(
            format!("{field}.name"),
            format!("`{name}` is not a valid client name: use 1-64 of A-Z a-z 0-9 - _ . @ (no leading, trailing or double dot)"),
        ));
    }
    if raw.key_sha256.is_none() && !has_identity_header {
        return Err(ConfigError::new(
            format!("{field}.key_sha256"),
            "required: the SHA-256 of the client's key (or set clients.identity_header)",
        ));
    }
    let models = match &raw.models {
        Some(list) => Some(glob_list(list, &format!("{field}.models"), "model")?),
        None => None,
    };
    if raw.rpm == Some(0) {
        return Err(ConfigError::new(
            format!("{field}.rpm"),
            "must be at least 1 (omit it for no limit)",
        ));
    }
    if raw.tpm == Some(0) || raw.tpm.is_some_and(|t| t > u64::from(u32::MAX)) {
        return Err(ConfigError::new(
            format!("{field}.tpm"),
            "must be between 1 and 4294967295 (omit it for no limit)",
        ));
    }
    let monthly_budget_micro = match raw.monthly_budget {
        Some(b) if b.is_finite() && b > 0.0 && b <= 1e12 => Some((b * 1e6).round() as u64),
        Some(_) => {
            return Err(ConfigError::new(
                format!("{field}.monthly_budget"),
                "must be a number greater than 0 and at most 1e12",
            ))
        }
        None => None,
    };
    Ok(Client {
        name: name.clone(),
        models,
        limits: Limits {
            rpm: raw.rpm,
            tpm: raw.tpm,
            monthly_budget_micro,
        },
        profile: raw.profile,
        ledger_key: ledger::key(name),
    })
}

/// 64 hex digits (either case) to the 32 bytes of a SHA-256.
fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let digit = |c: u8| char::from(c).to_digit(16);
        let (hi, lo) = (digit(pair[0])?, digit(pair[1])?);
        *byte = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
