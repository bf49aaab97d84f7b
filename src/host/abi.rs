//! The proxy-wasm host functions the filter calls, declared and wrapped here instead of taken
//! from the SDK's `hostcalls` module. The SDK's wrappers panic on any status they do not
//! expect and decode header names and values as UTF-8 with `unwrap` (proxy-wasm 0.2.5,
//! `hostcalls.rs`: `get_map`, `get_map_value`, even `get_map_bytes` for names), so one header
//! byte from a client or a provider could trap the VM. These wrappers return every status as
//! a value, hand header values over as raw bytes and decode maps with bounds checks
//! (`wire`). Imports return `u32`, not the SDK's `Status` enum: a status the enum does not
//! list must not become an invalid enum value.
//!
//! Calls used, all of them here and nowhere else: proxy_log,
//! proxy_get_current_time_nanoseconds, proxy_get_buffer_bytes, proxy_set_buffer_bytes,
//! proxy_get_header_map_pairs, proxy_get_header_map_value, proxy_replace_header_map_value,
//! proxy_remove_header_map_value, proxy_get_property, proxy_set_property,
//! proxy_get_shared_data, proxy_set_shared_data, proxy_send_local_response,
//! proxy_define_metric, proxy_increment_metric, proxy_record_metric, proxy_continue_stream.
//! clippy.toml forbids the SDK's `hostcalls` and the host-calling trait helpers outside
//! tests. The one exception is `proxy_grpc_call`, made through the SDK (`crate::wasm`):
//! only the SDK can register the call so that its answer reaches the stream.

use std::ptr::{null, null_mut};

use super::wire::{self, HeaderPairs};

/// A status other than Ok, as the host returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

pub const NOT_FOUND: Status = Status(1);
pub const SERIALIZATION_FAILURE: Status = Status(3);
pub const CAS_MISMATCH: Status = Status(8);

impl Status {
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            7 => "Empty",
            8 => "CasMismatch",
            10 => "InternalFailure",
            _ => "unknown status",
        }
    }
}

pub type AbiResult<T> = Result<T, Status>;

/// Proxy-wasm's map and buffer kinds (the ABI's numbers).
pub const REQUEST_HEADERS: u32 = 0;
pub const RESPONSE_HEADERS: u32 = 2;
pub const REQUEST_BODY: u32 = 0;
pub const RESPONSE_BODY: u32 = 1;
pub const GRPC_RECEIVE_BUFFER: u32 = 5;
pub const PLUGIN_CONFIGURATION: u32 = 7;
/// Proxy-wasm's stream kind of the request (`proxy_continue_stream`).
const STREAM_HTTP_REQUEST: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_set_header_map_pairs(map_type: u32, map_data: *const u8, map_size: usize) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
}

fn check(status: u32) -> AbiResult<()> {
    match status {
        0 => Ok(()),
        other => Err(Status(other)),
    }
}

/// Takes ownership of bytes the host allocated in this VM (through the SDK's exported
/// `proxy_on_memory_allocate`, a boxed slice of exactly `size` bytes).
///
/// # Safety
/// `data` must be null or what the host returned for this call, of `size` bytes.
unsafe fn owned(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    (!data.is_null()).then(|| Vec::from_raw_parts(data, size, size))
}

/// Calls a host function that returns bytes; `Ok(None)` for NotFound or no data.
fn returned_bytes(
    call: impl FnOnce(*mut *mut u8, *mut usize) -> u32,
) -> AbiResult<Option<Vec<u8>>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let status = call(&mut data, &mut size);
    // Even with an error status, memory the host handed over is ours to free.
    // SAFETY: `data`/`size` were written by the host for this call (or left null).
    let bytes = unsafe { owned(data, size) };
    match check(status) {
        Ok(()) => Ok(bytes),
        Err(NOT_FOUND) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn log(level: u32, message: &str) -> AbiResult<()> {
    // SAFETY: a valid pointer and length of a live &str.
    check(unsafe { proxy_log(level, message.as_ptr(), message.len()) })
}

pub fn now_nanos() -> AbiResult<u64> {
    let mut t: u64 = 0;
    // SAFETY: `t` outlives the call.
    check(unsafe { proxy_get_current_time_nanoseconds(&mut t) })?;
    Ok(t)
}

pub fn buffer(kind: u32, start: usize, max: usize) -> AbiResult<Option<Vec<u8>>> {
    // SAFETY: out-pointers to locals of `returned_bytes`.
    returned_bytes(|d, s| unsafe { proxy_get_buffer_bytes(kind, start, max, d, s) })
}

pub fn set_buffer(kind: u32, start: usize, size: usize, value: &[u8]) -> AbiResult<()> {
    // SAFETY: a valid pointer and length of a live slice.
    check(unsafe { proxy_set_buffer_bytes(kind, start, size, value.as_ptr(), value.len()) })
}

/// A whole header map; a map whose encoding does not add up is a SerializationFailure.
pub fn header_map(kind: u32) -> AbiResult<HeaderPairs> {
    // SAFETY: out-pointers to locals of `returned_bytes`.
    let bytes = returned_bytes(|d, s| unsafe { proxy_get_header_map_pairs(kind, d, s) })?;
    match bytes {
        None => Ok(Vec::new()),
        Some(b) => wire::decode_map(&b).ok_or(SERIALIZATION_FAILURE),
    }
}

pub fn header(kind: u32, name: &str) -> AbiResult<Option<Vec<u8>>> {
    // SAFETY: `name` is live; out-pointers to locals of `returned_bytes`.
    returned_bytes(|d, s| unsafe {
        proxy_get_header_map_value(kind, name.as_ptr(), name.len(), d, s)
    })
}

/// Sets (`Some`) or removes (`None`) a header.
pub fn set_header(kind: u32, name: &str, value: Option<&str>) -> AbiResult<()> {
    // SAFETY: pointers and lengths of live strings.
    check(unsafe {
        match value {
            Some(v) => {
                proxy_replace_header_map_value(kind, name.as_ptr(), name.len(), v.as_ptr(), v.len())
            }
            None => proxy_remove_header_map_value(kind, name.as_ptr(), name.len()),
        }
    })
}

/// Replaces a whole header map.
pub fn set_header_map(kind: u32, pairs: &[(String, Vec<u8>)]) -> AbiResult<()> {
    let bytes = wire::encode_map_bytes(pairs);
    // SAFETY: a valid pointer and length of a live buffer.
    check(unsafe { proxy_set_header_map_pairs(kind, bytes.as_ptr(), bytes.len()) })
}

pub fn property(path: &[&str]) -> AbiResult<Option<Vec<u8>>> {
    let path = wire::encode_path(path);
    // SAFETY: `path` is live; out-pointers to locals of `returned_bytes`.
    returned_bytes(|d, s| unsafe { proxy_get_property(path.as_ptr(), path.len(), d, s) })
}

pub fn set_property(path: &[&str], value: &[u8]) -> AbiResult<()> {
    let path = wire::encode_path(path);
    // SAFETY: pointers and lengths of live buffers.
    check(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

/// Shared data and its CAS token (`None` for a key never written).
pub fn shared_data(key: &str) -> AbiResult<(Option<Vec<u8>>, Option<u32>)> {
    let mut cas: u32 = 0;
    // SAFETY: `key` and `cas` are live; out-pointers to locals of `returned_bytes`.
    let value = returned_bytes(|d, s| unsafe {
        proxy_get_shared_data(key.as_ptr(), key.len(), d, s, &mut cas)
    })?;
    Ok((value, (cas != 0).then_some(cas)))
}

pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> AbiResult<()> {
    // SAFETY: pointers and lengths of live buffers.
    check(unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    })
}

pub fn send_local_response(status: u32, headers: &[(&str, &str)], body: &[u8]) -> AbiResult<()> {
    let headers = wire::encode_map(headers);
    // SAFETY: pointers and lengths of live buffers; no details string (null, 0).
    check(unsafe {
        proxy_send_local_response(
            status,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

pub fn define_metric(kind: u32, name: &str) -> AbiResult<u32> {
    let mut id: u32 = 0;
    // SAFETY: `name` and `id` are live.
    check(unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, offset: i64) -> AbiResult<()> {
    // SAFETY: plain values.
    check(unsafe { proxy_increment_metric(id, offset) })
}

pub fn record_metric(id: u32, value: u64) -> AbiResult<()> {
    // SAFETY: plain values.
    check(unsafe { proxy_record_metric(id, value) })
}

/// Asks for the root context's `on_tick` every `period_ms` (0 stops it).
pub fn set_tick_period(period_ms: u32) -> AbiResult<()> {
    // SAFETY: a plain value.
    check(unsafe { proxy_set_tick_period_milliseconds(period_ms) })
}

/// Lets the paused request go on.
pub fn resume_request() -> AbiResult<()> {
    // SAFETY: a plain value.
    check(unsafe { proxy_continue_stream(STREAM_HTTP_REQUEST) })
}
