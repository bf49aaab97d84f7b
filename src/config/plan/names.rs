//! The small checks every section shares: names, header names and values, glob lists.

use crate::config::error::ConfigError;
use crate::glob::Glob;

/// A non-empty list of non-empty glob patterns (`what` names them in errors).
pub(crate) fn glob_list(
    list: &[String],
    field: &str,
    what: &str,
) -> Result<Vec<Glob>, ConfigError> {
    non_empty(list, field)?;
    if let Some(i) = list.iter().position(String::is_empty) {
        return Err(ConfigError::new(
            format!("{field}[{i}]"),
            format!("empty {what} pattern"),
        ));
    }
    Ok(list.iter().map(|p| Glob::new(p)).collect())
}

pub(super) fn non_empty<T>(list: &[T], field: &str) -> Result<(), ConfigError> {
    if list.is_empty() {
        Err(ConfigError::new(
            field,
            "must not be an empty list (omit it to match anything)",
        ))
    } else {
        Ok(())
    }
}

/// Names of upstreams, aliases and rules: they appear in headers and stats.
pub(super) fn check_name(name: &str, field: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("`{name}` is not a valid name: use 1-128 of A-Z a-z 0-9 - _ . : / @"),
        ))
    }
}

pub(crate) fn check_header_name(name: &str, field: &str) -> Result<(), ConfigError> {
    if !name.is_empty() && name.bytes().all(is_token_byte) {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("`{name}` is not a valid header name"),
        ))
    }
}

pub(super) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// True when `v` may be sent as a header value: visible ASCII, spaces and tabs only.
pub fn is_header_value_safe(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}
