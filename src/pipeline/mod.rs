//! The per-request flows, written against the `Host` seam only: `request` for the filter on
//! the client's stream, `attempt` for the filter on each failover attempt, `track` for the
//! health tracking both share.
pub mod attempt;
pub mod request;
pub mod track;

pub use attempt::AttemptFlow;
pub use request::{Flow, RequestFlow};

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
    fn on_response_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Flow;
    fn on_response_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow;
    /// The end of the stream (Envoy's access-log callback, or the context going away):
    /// finishes what the request is counted in, once.
    fn on_log(&mut self, host: &mut dyn Host);
}

#[cfg(test)]
mod tests;
