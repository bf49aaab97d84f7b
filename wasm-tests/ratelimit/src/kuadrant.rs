//! `kuadrant.service.ratelimit.v1.RateLimitService`, limitador's extension
//! (`limitador-server/proto/kuadrantrls.proto`):
//!
//! ```proto
//! service RateLimitService {
//!   rpc CheckRateLimit(envoy.service.ratelimit.v3.RateLimitRequest) returns (envoy.service.ratelimit.v3.RateLimitResponse);
//!   rpc Report(envoy.service.ratelimit.v3.RateLimitRequest) returns (envoy.service.ratelimit.v3.RateLimitResponse);
//! }
//! ```
//!
//! Its messages are Envoy's, so this is written by hand in the shape tonic's generator gives
//! (a tower `Service` that routes on the path to a unary `tonic::server::Grpc` with prost's
//! codec): no proto compiler at build time.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tonic::body::Body;
use tonic::codegen::{http, Body as HttpBody, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::{Op, Rls};

pub const SERVICE_NAME: &str = "kuadrant.service.ratelimit.v1.RateLimitService";
const REPORT: &str = "/kuadrant.service.ratelimit.v1.RateLimitService/Report";
const CHECK: &str = "/kuadrant.service.ratelimit.v1.RateLimitService/CheckRateLimit";

#[derive(Clone)]
pub struct KuadrantServer(pub Arc<Rls>);

impl NamedService for KuadrantServer {
    const NAME: &'static str = SERVICE_NAME;
}

/// One method: the operation it applies to the counters.
struct Method(Arc<Rls>, Op);

impl UnaryService<RateLimitRequest> for Method {
    type Response = RateLimitResponse;
    type Future = BoxFuture<Response<RateLimitResponse>, Status>;

    fn call(&mut self, request: Request<RateLimitRequest>) -> Self::Future {
        let rls = Arc::clone(&self.0);
        let op = self.1;
        Box::pin(async move {
            let mut resp = rls.handle(request.into_inner(), op).await?;
            if op == Op::Report {
                // Report never refuses: it counts, whatever the limit says.
                resp.statuses.clear();
            }
            Ok(Response::new(resp))
        })
    }
}

impl<B> Service<http::Request<B>> for KuadrantServer
where
    B: HttpBody + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let op = match req.uri().path() {
            REPORT => Some(Op::Report),
            CHECK => Some(Op::Check),
            _ => None,
        };
        let rls = Arc::clone(&self.0);
        Box::pin(async move {
            let Some(op) = op else {
                return Ok(Status::unimplemented("no such method").into_http());
            };
            let mut grpc = Grpc::new(ProstCodec::<RateLimitResponse, RateLimitRequest>::default());
            Ok(grpc.unary(Method(rls, op), req).await)
        })
    }
}
