//! The per-request flows, written against the `Host` seam only: `request` for the filter on
//! the client's stream, `attempt` for the filter on each failover attempt, `track` for the
//! health tracking both share.
//!
//! `request` reads as the stages of a request, each in a module of its own: `identify` the
//! caller, `parse` the body, classify it (`crate::classify`), `routing`, `admit`, `rewrite`
//! for the upstream, the `answer` (response headers, cost, the router's own replies) and
//! the access-log `record`.
mod admit;
pub mod answer;
pub mod attempt;
mod chooser;
pub mod context_retry;
mod identify;
mod parse;
mod record;
pub mod request;
mod rewrite;
mod routing;
mod service_admit;
pub mod track;
mod translation;

pub use attempt::AttemptFlow;
pub use request::{Flow, RequestFlow};

use crate::errors::ApiError;
use crate::host::Host;

/// One HTTP stream as the filter sees it: the host hands each event to the flow.
pub trait StreamFlow {
    fn on_request_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Flow;
    fn on_request_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow;
    /// Request trailers: the body has ended without an end-of-stream data frame. A flow that
    /// waits for the whole body must not let such a request pass unread.
    fn on_request_trailers(&mut self, _host: &mut dyn Host) -> Flow {
        Flow::Continue
    }
    fn on_response_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Flow;
    /// Response trailers: the body ended without an end-of-stream data frame (Envoy's
    /// decompressor adds trailers, and so may a provider). What waits for the end of the body
    /// (usage, the cost header) must finish here.
    fn on_response_trailers(&mut self, _host: &mut dyn Host) -> Flow {
        Flow::Continue
    }
    fn on_response_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow;
    /// The end of the stream (Envoy's access-log callback, or the context going away):
    /// finishes what the request is counted in, once.
    fn on_log(&mut self, host: &mut dyn Host);
    /// The answer to a gRPC call the flow made (`status` 0: OK, with a message of `size`
    /// bytes).
    fn on_grpc_response(&mut self, _host: &mut dyn Host, _token: u32, _status: u32, _size: usize) {}
}

/// The stream of a filter without a configuration. Envoy never creates one (a plugin whose
/// `on_configure` failed is not used), but the SDK traps if a root context gives no stream
/// context, so this one answers 503 rather than let a request pass unrouted.
pub struct Unconfigured;

impl StreamFlow for Unconfigured {
    fn on_request_headers(&mut self, host: &mut dyn Host, _end_of_stream: bool) -> Flow {
        let error = ApiError::no_candidate("The router has no configuration.");
        let json = [("content-type", crate::models::CONTENT_TYPE)];
        let _ = host.send_local_reply(error.status, &json, &error.body());
        Flow::Pause
    }
    fn on_request_body(&mut self, _: &mut dyn Host, _: usize, _: bool) -> Flow {
        Flow::Pause
    }
    fn on_response_headers(&mut self, _: &mut dyn Host, _: bool) -> Flow {
        Flow::Continue
    }
    fn on_response_body(&mut self, _: &mut dyn Host, _: usize, _: bool) -> Flow {
        Flow::Continue
    }
    fn on_log(&mut self, _: &mut dyn Host) {}
}

#[cfg(test)]
mod tests;
