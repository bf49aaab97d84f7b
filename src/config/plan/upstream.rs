//! One upstream: its cluster, host and path prefix checked, its key read from the
//! environment, its extra headers validated.

use super::names::{check_header_name, check_name, is_header_value_safe};
use super::{Auth, Upstream};
use crate::config::error::ConfigError;
use crate::config::raw::{AuthKind, RawUpstream, UpstreamFormat};
use crate::translate::Format;

/// Anthropic's output limit for translated requests that set none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

pub(super) fn compile_upstream(
    name: &str,
    up: &RawUpstream,
    field: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Upstream, ConfigError> {
    check_name(name, field)?;
    let cluster = up.cluster.clone().unwrap_or_else(|| name.to_owned());
    if cluster.is_empty() || !cluster.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::new(
            format!("{field}.cluster"),
            "must be a non-empty Envoy cluster name without spaces or control characters",
        ));
    }
    if let Some(host) = &up.host {
        let ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
        if !ok {
            return Err(ConfigError::new(
                format!("{field}.host"),
                "must be a host name, optionally with :port",
            ));
        }
    }
    let default_max_tokens = up.default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    if default_max_tokens == 0 || default_max_tokens > 1_000_000 {
        return Err(ConfigError::new(
            format!("{field}.default_max_tokens"),
            "must be between 1 and 1000000",
        ));
    }
    let prefix = up.path_prefix.trim_end_matches('/');
    if !up.path_prefix.starts_with('/')
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
    {
        return Err(ConfigError::new(
            format!("{field}.path_prefix"),
            "must start with `/` and contain no spaces, `?` or `#`",
        ));
    }
    let mut auth = None;
    let mut missing_key_env = None;
    if let Some(raw_auth) = &up.auth {
        let var = &raw_auth.key_env;
        if var.is_empty() || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ConfigError::new(
                format!("{field}.auth.key_env"),
                "must be an environment variable name ([A-Za-z0-9_]+)",
            ));
        }
        match env(var).filter(|k| !k.trim().is_empty()) {
            Some(key) => {
                let key = key.trim();
                if !is_header_value_safe(key) {
                    // Never echo the key itself.
                    return Err(ConfigError::new(
                        format!("{field}.auth.key_env"),
                        format!("the value of {var} contains characters not allowed in a header"),
                    ));
                }
                let (header, value) = match raw_auth.kind {
                    AuthKind::Bearer => ("authorization", format!("Bearer {key}")),
                    AuthKind::XApiKey => ("x-api-key", key.to_owned()),
                    AuthKind::ApiKey => ("api-key", key.to_owned()),
                };
                auth = Some(Auth { header, value });
            }
            None => missing_key_env = Some(var.clone()),
        }
    }
    let mut headers = Vec::with_capacity(up.headers.len());
    for (hname, hvalue) in &up.headers {
        let hfield = format!("{field}.headers.{hname}");
        let lower = hname.to_ascii_lowercase();
        check_header_name(&lower, &hfield)?;
        if headers.iter().any(|(n, _)| *n == lower) {
            return Err(ConfigError::new(
                hfield,
                "duplicate header (names are case-insensitive)",
            ));
        }
        if matches!(
            lower.as_str(),
            "content-length" | "host" | "transfer-encoding" | "connection"
        ) {
            return Err(ConfigError::new(
                hfield,
                "this header is managed by the router or Envoy",
            ));
        }
        if !is_header_value_safe(hvalue) {
            return Err(ConfigError::new(
                hfield,
                "value contains control characters",
            ));
        }
        headers.push((lower, hvalue.clone()));
    }
    Ok(Upstream {
        name: name.to_owned(),
        cluster,
        authority: up.host.clone(),
        path_prefix: prefix.to_owned(),
        auth,
        missing_key_env,
        headers,
        format: up.format.map(|f| match f {
            UpstreamFormat::Openai => Format::OpenAi,
            UpstreamFormat::Anthropic => Format::Anthropic,
        }),
        default_max_tokens,
    })
}
