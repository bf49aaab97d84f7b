//! One canonical path decides what a request is. The filter does not trust the Envoy it is
//! dropped into to normalise paths, and many upstream servers collapse look-alike paths
//! (`//v1/chat/completions`, `/v1/./chat/completions`, `/v1/chat%2Fcompletions`,
//! `/V1/chat/completions`, `/v1/chat/completions;x=1`), so every spelling of a routed endpoint
//! must route exactly as the canonical one, and be sent upstream canonical.
//!
//! Canonical form: percent-escapes decoded, `;` parameters cut from each segment, empty and
//! `.` segments dropped, `..` applied, the known endpoint names in lower case (a model id
//! keeps its case), no trailing slash, the query string kept as sent. A path that cannot be
//! read safely (an encoded `/`, `\` or NUL, a backslash, a bad escape, bytes that are not
//! UTF-8 once decoded, `..` above the root) is refused when its best reading is a routed
//! endpoint, and otherwise left alone.

use crate::endpoint::Endpoint;

/// Longest path the filter canonicalises; a longer one is refused if it would be routed
/// (Envoy's default header limit is 60 KiB; no endpoint path comes near this).
pub const MAX_PATH_BYTES: usize = 8 * 1024;

/// What a request path is, read canonically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathKind {
    /// A routed endpoint; `canonical` includes the query string.
    Endpoint {
        endpoint: Endpoint,
        canonical: String,
    },
    /// `/v1/models` or `/v1/models/{id}`, canonical (with the query string).
    Models { canonical: String },
    /// Would be one of the above, but cannot be read safely.
    Unsafe,
    /// Anything else: passed on untouched.
    Other,
}

/// Reads `raw` (the `:path` as sent).
pub fn classify(raw: &str) -> PathKind {
    let split = raw.find(['?', '#']).unwrap_or(raw.len());
    let (path, query) = raw.split_at(split);
    let (segments, safe) = segments(path);
    let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    let kind = match lower.as_slice() {
        ["v1", "chat", "completions"] => Some(Some(Endpoint::ChatCompletions)),
        ["v1", "completions"] => Some(Some(Endpoint::Completions)),
        ["v1", "responses"] => Some(Some(Endpoint::Responses)),
        ["v1", "embeddings"] => Some(Some(Endpoint::Embeddings)),
        ["v1", "messages"] => Some(Some(Endpoint::AnthropicMessages)),
        ["v1", "models", ..] => Some(None),
        _ => None,
    };
    let Some(endpoint) = kind else {
        return PathKind::Other;
    };
    if !safe || raw.len() > MAX_PATH_BYTES {
        return PathKind::Unsafe;
    }
    match endpoint {
        Some(endpoint) => PathKind::Endpoint {
            endpoint,
            canonical: format!("/v1{}{query}", endpoint.suffix()),
        },
        None => {
            // The id stays percent-encoded where decoding made it ambiguous (`%`).
            let id: Vec<String> = segments.iter().skip(2).map(|s| reencode(s)).collect();
            let canonical = match id.is_empty() {
                true => format!("/v1/models{query}"),
                false => format!("/v1/models/{}{query}", id.join("/")),
            };
            PathKind::Models { canonical }
        }
    }
}

/// The path's segments after decoding and dot removal, and whether the reading is safe.
/// Unsafe bytes are read in their most permissive sense (an encoded slash as a slash), so
/// that a path that could reach an endpoint is recognised and refused.
fn segments(path: &str) -> (Vec<String>, bool) {
    let (decoded, mut safe) = decode(path.as_bytes());
    let mut text = match String::from_utf8(decoded) {
        Ok(t) => t,
        Err(e) => {
            safe = false;
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        }
    };
    // A decoded `?` or `#` (`%3F`, `%23`) ends the path for a server that decodes first.
    if let Some(end) = text.find(['?', '#']) {
        safe = false;
        text.truncate(end);
    }
    let mut out: Vec<String> = Vec::new();
    for segment in text.split('/') {
        // `;` parameters are cut: servers differ on whether `a;x` is `a`.
        let segment = segment.split(';').next().unwrap_or("");
        match segment {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    safe = false;
                }
            }
            s => out.push(s.to_owned()),
        }
    }
    (out, safe)
}

/// Percent-decodes `bytes`; `\`, an encoded `/`, `\` or NUL and a bad escape make it unsafe
/// (each read as the separator it may be taken for; a bad escape is kept as sent).
fn decode(bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(bytes.len());
    let mut safe = true;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        match b {
            b'%' => match (bytes.get(i).and_then(hex), bytes.get(i + 1).and_then(hex)) {
                (Some(h), Some(l)) => {
                    let c = h << 4 | l;
                    i += 2;
                    match c {
                        b'/' | b'\\' | 0 => {
                            safe = false;
                            out.push(b'/');
                        }
                        c => out.push(c),
                    }
                }
                _ => {
                    safe = false;
                    out.push(b'%');
                }
            },
            b'\\' => {
                safe = false;
                out.push(b'/');
            }
            b => out.push(b),
        }
    }
    (out, safe)
}

/// A decoded segment as a path may carry it: `%` escaped again (a decoded `?` or `#`
/// already made the path unsafe).
fn reencode(segment: &str) -> String {
    segment.replace('%', "%25")
}

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(raw: &str) -> Option<(Endpoint, String)> {
        match classify(raw) {
            PathKind::Endpoint {
                endpoint,
                canonical,
            } => Some((endpoint, canonical)),
            _ => None,
        }
    }

    #[test]
    fn every_spelling_of_an_endpoint_is_the_canonical_one() {
        let chat = Some((Endpoint::ChatCompletions, "/v1/chat/completions".to_owned()));
        for raw in [
            "/v1/chat/completions",
            "//v1/chat/completions",
            "/v1/./chat/completions",
            "/v1/chat//completions",
            "/v1/chat/../chat/completions",
            "/%761/chat/completions",
            "/V1/Chat/COMPLETIONS",
            "/v1/chat/completions;x=1",
            "/v1;a=b/chat/completions",
            "/v1/chat/completions/",
            "/./v1/chat/completions",
            "/v1/%63hat/completions",
            "/v1/chat/%2e/completions",
            "/v1/chat/%2E%2E/chat/completions",
            "/x/../v1/chat/completions",
        ] {
            assert_eq!(endpoint(raw), chat, "{raw}");
        }
        assert_eq!(
            endpoint("/v1//messages?beta=true"),
            Some((
                Endpoint::AnthropicMessages,
                "/v1/messages?beta=true".to_owned()
            ))
        );
        assert_eq!(
            endpoint("/./v1/responses"),
            Some((Endpoint::Responses, "/v1/responses".to_owned()))
        );
    }

    #[test]
    fn unsafe_spellings_of_an_endpoint_are_refused_others_left_alone() {
        for raw in [
            "/v1/chat%2Fcompletions",
            "/v1%2Fchat%2Fcompletions",
            "/v1/chat%2fcompletions",
            "/v1/chat%5Ccompletions",
            "/v1\\chat\\completions",
            "/v1/chat/completions%00",
            "/../v1/chat/completions",
            "/v1/%ff/../chat/completions",
            "/v1/models%2Fgpt-4o",
            "/v1/chat/completions%3Fx=1",
            "/v1/chat/completions%23frag",
            "/v1/responses%3F",
        ] {
            assert_eq!(classify(raw), PathKind::Unsafe, "{raw}");
        }
        let long = format!("/v1/chat/completions?{}", "a".repeat(MAX_PATH_BYTES));
        assert_eq!(classify(&long), PathKind::Unsafe);
        for raw in [
            "/v1/files",
            "/v1/files%2Fx",
            "/v1/chat/completionsX",
            "/v2/chat/completions",
            "/",
            "",
            "/v1/chat/completions/x",
            "/v1/batches/../files",
            // A bad escape is no endpoint name: servers refuse it or read it literally.
            "/v1/chat/completions%zz",
            "/v1/chat/completions%",
        ] {
            assert_eq!(classify(raw), PathKind::Other, "{raw}");
        }
    }

    #[test]
    fn models_paths_keep_the_id_and_its_case() {
        let models = |c: &str| PathKind::Models {
            canonical: c.to_owned(),
        };
        assert_eq!(classify("/v1/models"), models("/v1/models"));
        assert_eq!(classify("/V1/Models/"), models("/v1/models"));
        assert_eq!(
            classify("//v1/models/GPT-4o?x"),
            models("/v1/models/GPT-4o?x")
        );
        assert_eq!(
            classify("/v1/models/meta-llama/Llama-3"),
            models("/v1/models/meta-llama/Llama-3")
        );
        assert_eq!(classify("/v1/models/a%2541"), models("/v1/models/a%2541"));
        assert_eq!(classify("/v1/models/a%3F"), PathKind::Unsafe);
    }
}
