//! The narrow seam between the pure core and the proxy: everything the filter asks of Envoy
//! goes through `Host`, so the whole request flow runs natively against `MockHost` in tests.
//! The proxy-wasm implementation lives in `crate::wasm` and is only compiled for wasm32.

#[cfg(target_arch = "wasm32")]
pub mod abi;
pub mod mock;
pub mod shared;
pub mod wire;

use std::fmt;

pub use crate::metrics::MetricKind;
pub use wire::{header_bytes, header_value, HeaderPairs};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// Shared data changed since it was read (compare-and-swap lost).
    CasMismatch,
    /// Any other status the host returned, with the call that failed.
    Status(String),
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::CasMismatch => write!(f, "shared data CAS mismatch"),
            HostError::Status(s) => write!(f, "host call failed: {s}"),
        }
    }
}

pub type HostResult<T> = Result<T, HostError>;

pub trait Host {
    /// A request header by lower-case name (first value). A value that is not UTF-8 is an
    /// error (the caller treats it as absent or refuses the request).
    fn request_header(&self, name: &str) -> HostResult<Option<String>>;
    /// Sets (`Some`) or removes (`None`) a request header. Only valid before the headers
    /// were let through.
    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> HostResult<()>;
    /// The first `len` bytes of the buffered request body.
    fn request_body(&self, len: usize) -> HostResult<Option<Vec<u8>>>;
    /// Replaces the whole buffered request body (of current length `current_len`).
    fn replace_request_body(&mut self, current_len: usize, body: &[u8]) -> HostResult<()>;
    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> HostResult<()>;
    /// A response header by lower-case name (first value), e.g. `:status` or `retry-after`;
    /// an error when the value is not UTF-8.
    fn response_header(&self, _name: &str) -> HostResult<Option<String>> {
        Ok(None)
    }
    /// All request headers (one host call; names in lower case, values as raw bytes: a client
    /// may send bytes that are not UTF-8).
    fn request_headers(&self) -> HostResult<HeaderPairs> {
        Err(HostError::Status("request_headers: unsupported".to_owned()))
    }
    /// Replaces all request headers (one host call for many edits; Envoy treats it as a
    /// header change for the route).
    fn set_request_headers(&mut self, _headers: &HeaderPairs) -> HostResult<()> {
        Err(HostError::Status(
            "set_request_headers: unsupported".to_owned(),
        ))
    }
    /// Replaces all response headers (one host call).
    fn set_response_headers(&mut self, _headers: &HeaderPairs) -> HostResult<()> {
        Err(HostError::Status(
            "set_response_headers: unsupported".to_owned(),
        ))
    }
    /// All response headers (one host call; names in lower case, values as raw bytes).
    fn response_headers(&self) -> HostResult<HeaderPairs> {
        Ok(Vec::new())
    }
    /// The first `len` bytes of the current response body chunk.
    fn response_body(&self, _len: usize) -> HostResult<Option<Vec<u8>>> {
        Ok(None)
    }
    /// `len` bytes of the response body from `start` (of all of it Envoy holds, while the
    /// filter holds the body).
    fn response_body_range(&self, _start: usize, _len: usize) -> HostResult<Option<Vec<u8>>> {
        Ok(None)
    }
    /// A stream property (Envoy attribute) by path, e.g. `["response", "code"]`; `None` when
    /// the host does not know it.
    fn property(&self, _path: &[&str]) -> HostResult<Option<Vec<u8>>> {
        Ok(None)
    }
    /// Publishes `value` as the stream's filter state `wasm.<name>` (for access logs).
    fn set_property(&mut self, name: &str, _value: &[u8]) -> HostResult<()> {
        Err(HostError::Status(format!(
            "set_property {name}: unsupported"
        )))
    }
    /// Replaces the current response body chunk (of length `current_len`).
    fn replace_response_body(&mut self, _current_len: usize, _body: &[u8]) -> HostResult<()> {
        Err(HostError::Status(
            "replace_response_body: unsupported".to_owned(),
        ))
    }
    /// Shared data (all workers of one `vm_id`): value and its CAS token.
    fn shared_data(&self, key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)>;
    /// Stores shared data if `cas` still matches; `Err(CasMismatch)` otherwise.
    fn set_shared_data(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()>;
    /// Answers the client directly; the request goes no further.
    fn send_local_reply(
        &mut self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HostResult<()>;
    /// Wall-clock time in nanoseconds since the Unix epoch.
    fn now_nanos(&self) -> u64;
    /// Defines an Envoy stat and returns its id, valid in this VM. Envoy prefixes the name
    /// with `wasmcustom.`; defining a name again gives a new id for the same stat. Not
    /// implemented by default (every metric call fails).
    fn define_metric(&mut self, _kind: MetricKind, name: &str) -> HostResult<u32> {
        Err(HostError::Status(format!(
            "define_metric {name}: unsupported"
        )))
    }
    /// Adds `offset` to a counter (which refuses `offset <= 0`) or a gauge.
    fn increment_metric(&mut self, _id: u32, _offset: i64) -> HostResult<()> {
        Err(HostError::Status(
            "increment_metric: unsupported".to_owned(),
        ))
    }
    /// Records a histogram sample, sets a gauge, or adds to a counter.
    fn record_metric(&mut self, _id: u32, _value: u64) -> HostResult<()> {
        Err(HostError::Status("record_metric: unsupported".to_owned()))
    }
    /// Starts a unary gRPC call; its answer comes to the stream's `on_grpc_response` with the
    /// token returned (and is dropped if the stream has ended by then: the host keeps the
    /// call alive, so a call made at the end of a stream still reaches the service).
    fn grpc_call(&mut self, _call: &GrpcCall) -> HostResult<u32> {
        Err(HostError::Status("grpc_call: unsupported".to_owned()))
    }
    /// The message of the gRPC answer being delivered, `size` bytes.
    fn grpc_response(&self, _size: usize) -> HostResult<Option<Vec<u8>>> {
        Ok(None)
    }
    /// Lets a request paused after its body go on (after a gRPC answer).
    fn resume_request(&mut self) -> HostResult<()> {
        Err(HostError::Status("resume_request: unsupported".to_owned()))
    }
}

/// A unary gRPC call: to `upstream` (a serialized `envoy.config.core.v3.GrpcService`),
/// `service`/`method`, with a serialized request message.
#[derive(Debug, Clone, Copy)]
pub struct GrpcCall<'a> {
    pub upstream: &'a [u8],
    pub service: &'a str,
    pub method: &'a str,
    pub message: &'a [u8],
    pub timeout_ms: u32,
}

/// How many times a shared-data update re-reads and retries after losing a CAS race.
pub const CAS_RETRIES: usize = 16;

/// Atomically increments the u64 counter at `key` and returns its previous value.
/// Retries a bounded number of times on CAS mismatch; `None` if it never won.
pub fn shared_increment(host: &mut dyn Host, key: &str) -> Option<u64> {
    for _ in 0..CAS_RETRIES {
        let (value, cas) = host.shared_data(key).ok()?;
        let current = value
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0);
        match host.set_shared_data(key, &current.wrapping_add(1).to_le_bytes(), cas) {
            Ok(()) => return Some(current),
            Err(HostError::CasMismatch) => continue,
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::mock::MockHost;
    use super::*;

    #[test]
    fn increments_and_survives_cas_races() {
        let mut host = MockHost::default();
        assert_eq!(shared_increment(&mut host, "k"), Some(0));
        assert_eq!(shared_increment(&mut host, "k"), Some(1));
        // Another worker writes between our read and our write, three times in a row.
        host.cas_conflicts = 3;
        assert_eq!(shared_increment(&mut host, "k"), Some(5));
        assert_eq!(shared_increment(&mut host, "k"), Some(6));
        // A host that always loses gives up after a bounded number of tries.
        host.cas_conflicts = usize::MAX;
        assert_eq!(shared_increment(&mut host, "k"), None);
    }
}
