//! The floor of body routing in Envoy's V8, for `make bench`: a proxy-wasm filter that does
//! only the unavoidable part of what llm-router does to a chat request, so that the router's
//! own cost reads as its distance from this one, measured in the same run. Built as the cargo
//! example `floor_filter` (target/wasm32-wasip1/release/examples/floor_filter.wasm) and loaded
//! by bench.py in place of llm_router.wasm with the bundled configuration.
//!
//! Per request, 5 host calls: the request header map (1), paused until the body is whole;
//! the body read once (2), parsed with serde_json, `model` set to `mock-small`, the header map
//! written back with the routing header `x-llm-router-cluster: mock-b` and the new
//! `content-length` (3, as the router writes its header edits), the body replaced (4); one
//! response header set (5). A body that is no JSON object goes on untouched.

// A benchmark fixture: the SDK's host calls unwrap, which clippy.toml forbids in the router.
#![allow(clippy::disallowed_methods)]
#![cfg(target_arch = "wasm32")]

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};
use serde_json::Value;

const CLUSTER_HEADER: &str = "x-llm-router-cluster";

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(FloorRoot) });
}}

struct FloorRoot;

impl Context for FloorRoot {}

impl RootContext for FloorRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor::default()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Default)]
struct Floor {
    /// The request headers, read once (names as text, values as bytes).
    headers: Vec<(String, Vec<u8>)>,
}

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default();
        if end_of_stream {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let Ok(Some(body)) = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
        else {
            return Action::Continue;
        };
        let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(&body) else {
            return Action::Continue;
        };
        fields.insert("model".to_owned(), Value::String("mock-small".to_owned()));
        let Ok(new_body) = serde_json::to_vec(&fields) else {
            return Action::Continue;
        };
        let length = new_body.len().to_string();
        let mut headers: Vec<(&str, &[u8])> = self
            .headers
            .iter()
            .filter(|(k, _)| k != CLUSTER_HEADER && k != "content-length")
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        headers.push((CLUSTER_HEADER, b"mock-b"));
        headers.push(("content-length", length.as_bytes()));
        let _ = hostcalls::set_map_bytes(MapType::HttpRequestHeaders, headers);
        let _ = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, body_size, &new_body);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, "x-floor", Some("1"));
        Action::Continue
    }
}
