//! `llm-router-ratelimit`: the rate-limit service of the end-to-end tests, Limitador (the
//! crate, Redis or in-memory storage) behind two gRPC services on one port:
//!
//! * `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`, with the semantics of
//!   limitador-server's: namespace = `domain`, each descriptor a map of its entries, the list
//!   bound as `descriptors` in the limit's CEL context, `hits_addend` 0 meaning 1, check and
//!   update; OK or OVER_LIMIT, UNKNOWN for an empty domain, gRPC UNAVAILABLE when the storage
//!   fails.
//! * `kuadrant.service.ratelimit.v1.RateLimitService/{Report,CheckRateLimit}` (limitador's own
//!   extension, `limitador-server/proto/kuadrantrls.proto`; the messages are Envoy's): Report
//!   adds `hits_addend` to every counter that applies and never refuses; CheckRateLimit says
//!   whether `hits_addend` more would go over, without counting it.
//!
//! ```text
//! llm-router-ratelimit --listen 127.0.0.1:0 [--redis redis://127.0.0.1:6379] --limits FILE
//!                      [--delay-ms N]
//! ```
//!
//! The limits FILE is limitador-server's YAML (a list of `{namespace, name, max_value,
//! seconds, conditions, variables}`). Without `--redis` the counters live in memory. Prints
//! `listening 127.0.0.1:<port>` once bound and exits when stdin reaches EOF, like
//! wasm-tests/sse_upstream.rs. `--delay-ms` delays every answer (for timeout tests).

mod kuadrant;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use limitador::counter::Counter;
use limitador::errors::LimitadorError;
use limitador::limit::{Context, Limit, Namespace};
use limitador::storage::redis::AsyncRedisStorage;
use limitador::{AsyncRateLimiter, CheckResult, RateLimiter};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

/// How long one Redis connection attempt or command may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the counters live.
pub enum Limiter {
    /// In-process counters (no `--redis`): unit tests and quick local runs.
    Memory(RateLimiter),
    /// Counters in Redis: they survive a restart of this service.
    Redis(AsyncRateLimiter),
}

/// What a call does to the counters that apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// ShouldRateLimit: admit and count `hits`, or refuse and count nothing.
    CheckAndUpdate,
    /// Report: count `hits`, whatever the limit.
    Report,
    /// CheckRateLimit: would `hits` more go over? Counts nothing.
    Check,
}

/// The service behind both gRPC interfaces.
pub struct Rls {
    limiter: Limiter,
    /// Every call to the limiter holds this lock. Limitador's Redis storage is
    /// check-then-increment, two round trips that are not atomic together (see the note at
    /// the top of limitador's `storage/redis/redis_async.rs`: "this implementation does not
    /// guarantee exact limits"), so two concurrent checks could both see 19 of 20 and both be
    /// admitted. The end-to-end tests count exactly, under 100 concurrent requests from two
    /// Envoys, so this test service serializes every check and update instead. (Measured:
    /// 100 concurrent calls at max 20 admitted 20-26 without this lock, 20 with it.)
    lock: Mutex<()>,
    delay: Duration,
}

impl Rls {
    pub fn new(limiter: Limiter, delay: Duration) -> Self {
        Rls {
            limiter,
            lock: Mutex::new(()),
            delay,
        }
    }

    /// Replaces the limits (limitador's `configure_with`: counters of unchanged limits stay).
    pub async fn configure(&self, limits: Vec<Limit>) -> Result<(), LimitadorError> {
        match &self.limiter {
            Limiter::Memory(l) => l.configure_with(limits),
            Limiter::Redis(l) => l.configure_with(limits).await,
        }
    }

    /// One call of either service: the response, or the gRPC status to fail it with.
    pub async fn handle(
        self: &Arc<Self>,
        req: RateLimitRequest,
        op: Op,
    ) -> Result<RateLimitResponse, Status> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if req.domain.is_empty() {
            return Ok(response(Code::Unknown, Vec::new()));
        }
        let namespace = Namespace::from(req.domain);
        let descriptors: Vec<HashMap<String, String>> = req
            .descriptors
            .into_iter()
            .map(|d| d.entries.into_iter().map(|e| (e.key, e.value)).collect())
            .collect();
        let count = descriptors.len();
        // "hits_addend" defaults to 1 in the spec, to 0 in the generated struct.
        let hits = u64::from(req.hits_addend.max(1));
        // limitador unwraps the result of a condition's evaluation (`Limit::applies`): run it
        // in its own task so that such a panic fails this call with INTERNAL rather than
        // resetting the stream.
        let this = Arc::clone(self);
        let outcome = tokio::spawn(async move {
            // LimitadorError is not Send: turned into the gRPC status inside the task.
            this.apply(&namespace, descriptors, hits, op)
                .await
                .map_err(status_of)
        })
        .await
        .map_err(|e| Status::internal(format!("rate-limit evaluation failed: {e}")))?;
        match outcome? {
            None => Ok(response(Code::Ok, Vec::new())),
            Some(result) => {
                let code = if result.limited {
                    Code::OverLimit
                } else {
                    Code::Ok
                };
                Ok(response(code, statuses(code, &result, count)))
            }
        }
    }

    async fn apply(
        &self,
        namespace: &Namespace,
        descriptors: Vec<HashMap<String, String>>,
        hits: u64,
        op: Op,
    ) -> Result<Option<CheckResult>, LimitadorError> {
        let mut ctx = Context::default();
        ctx.list_binding("descriptors".to_string(), descriptors);
        let _serialized = self.lock.lock().await;
        match (&self.limiter, op) {
            (Limiter::Memory(l), Op::CheckAndUpdate) => l
                .check_rate_limited_and_update(namespace, &ctx, hits)
                .map(Some),
            (Limiter::Memory(l), Op::Report) => {
                l.update_counters(namespace, &ctx, hits).map(|()| None)
            }
            (Limiter::Memory(l), Op::Check) => l.is_rate_limited(namespace, &ctx, hits).map(Some),
            (Limiter::Redis(l), Op::CheckAndUpdate) => l
                .check_rate_limited_and_update(namespace, &ctx, hits)
                .await
                .map(Some),
            (Limiter::Redis(l), Op::Report) => l
                .update_counters(namespace, &ctx, hits)
                .await
                .map(|()| None),
            (Limiter::Redis(l), Op::Check) => {
                l.is_rate_limited(namespace, &ctx, hits).await.map(Some)
            }
        }
    }
}

/// Like limitador-server: a storage failure is UNAVAILABLE, not UNKNOWN (which Envoy treats
/// as OK, whatever failure_mode_deny says).
fn status_of(e: LimitadorError) -> Status {
    match e {
        LimitadorError::StorageError(e) => {
            eprintln!("llm-router-ratelimit: storage error: {e}");
            Status::unavailable(format!("rate-limit storage: {e}"))
        }
        e => Status::invalid_argument(format!("rate-limit evaluation: {e}")),
    }
}

fn response(code: Code, statuses: Vec<DescriptorStatus>) -> RateLimitResponse {
    RateLimitResponse {
        overall_code: code.into(),
        statuses,
        ..Default::default()
    }
}

/// One status per descriptor, each with the overall code. limitador's result is per limit,
/// not per descriptor, so the most restrictive counter's numbers (remaining, reset, the limit)
/// go with it only when there is exactly one descriptor (what the router sends).
fn statuses(code: Code, result: &CheckResult, descriptors: usize) -> Vec<DescriptorStatus> {
    let tightest = if descriptors == 1 {
        result
            .counters
            .iter()
            .min_by_key(|c| c.remaining().unwrap_or(c.max_value()))
    } else {
        None
    };
    (0..descriptors)
        .map(|_| {
            let mut status = DescriptorStatus {
                code: code.into(),
                ..Default::default()
            };
            if let Some(counter) = tightest {
                fill_status(&mut status, counter);
            }
            status
        })
        .collect()
}

fn fill_status(status: &mut DescriptorStatus, counter: &Counter) {
    let remaining = counter.remaining().unwrap_or(counter.max_value());
    status.limit_remaining = u32::try_from(remaining).unwrap_or(u32::MAX);
    status.duration_until_reset = counter.expires_in().map(|d| PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    });
    let unit = match counter.window().as_secs() {
        1 => Unit::Second,
        60 => Unit::Minute,
        3600 => Unit::Hour,
        86400 => Unit::Day,
        604800 => Unit::Week,
        _ => Unit::Unknown,
    };
    status.current_limit = Some(RateLimit {
        name: counter.limit().name().unwrap_or_default().to_string(),
        requests_per_unit: u32::try_from(counter.max_value()).unwrap_or(u32::MAX),
        unit: unit.into(),
    });
}

/// The Envoy interface.
pub struct EnvoyRls(pub Arc<Rls>);

#[tonic::async_trait]
impl RateLimitService for EnvoyRls {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        self.0
            .handle(request.into_inner(), Op::CheckAndUpdate)
            .await
            .map(Response::new)
    }
}

struct Args {
    listen: SocketAddr,
    redis: Option<String>,
    limits: String,
    delay: Duration,
}

const USAGE: &str = "usage: llm-router-ratelimit --listen 127.0.0.1:0 [--redis redis://HOST:PORT] \
                     --limits FILE [--delay-ms N]";

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut listen = None;
    let mut redis = None;
    let mut limits = None;
    let mut delay = Duration::ZERO;
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                listen = Some(
                    v.parse::<SocketAddr>()
                        .map_err(|e| format!("--listen {v}: {e}"))?,
                );
            }
            "--redis" => redis = Some(value()?),
            "--limits" => limits = Some(value()?),
            "--delay-ms" => {
                let v = value()?;
                let ms = v
                    .parse::<u64>()
                    .map_err(|e| format!("--delay-ms {v}: {e}"))?;
                delay = Duration::from_millis(ms);
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or_else(|| format!("--listen is required\n{USAGE}"))?,
        redis,
        limits: limits.ok_or_else(|| format!("--limits is required\n{USAGE}"))?,
        delay,
    })
}

/// Reads limitador-server's limits file.
pub fn parse_limits(text: &str) -> Result<Vec<Limit>, String> {
    serde_yaml::from_str::<Vec<Limit>>(text).map_err(|e| e.to_string())
}

/// limitador's `AsyncRedisStorage::new` with bounded waits: its connection manager's defaults
/// (no response or connection timeout, 6 reconnection attempts with exponential backoff) keep
/// a call hanging for seconds once Redis is gone, where a test wants UNAVAILABLE at once.
async fn redis_storage(url: &str) -> Result<AsyncRedisStorage, redis::RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(REDIS_TIMEOUT)
        .set_response_timeout(REDIS_TIMEOUT)
        // One attempt per reconnection: its retries wait a second or more each (backon's
        // minimum delay, with jitter), and every call would wait for them. A call that
        // finds Redis gone fails, the next one tries again.
        .set_number_of_retries(0);
    let manager = ConnectionManager::new_with_config(redis::Client::open(url)?, config).await?;
    AsyncRedisStorage::new_with_conn_manager(manager).await
}

async fn run(args: Args) -> Result<(), String> {
    let text = std::fs::read_to_string(&args.limits)
        .map_err(|e| format!("cannot read {}: {e}", args.limits))?;
    let limits = parse_limits(&text).map_err(|e| format!("{}: {e}", args.limits))?;
    let limiter = match &args.redis {
        None => Limiter::Memory(RateLimiter::new(10_000)),
        Some(url) => {
            let storage = redis_storage(url)
                .await
                .map_err(|e| format!("cannot connect to Redis at {url}: {e}"))?;
            Limiter::Redis(AsyncRateLimiter::new_with_storage(Box::new(storage)))
        }
    };
    let rls = Arc::new(Rls::new(limiter, args.delay));
    rls.configure(limits)
        .await
        .map_err(|e| format!("cannot configure the limits: {e}"))?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("local address: {e}"))?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .add_service(RateLimitServiceServer::new(EnvoyRls(Arc::clone(&rls))))
        .add_service(kuadrant::KuadrantServer(rls))
        .serve_with_incoming(incoming);
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {addr}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("stdout: {e}"))?;
    }
    tokio::select! {
        r = server => r.map_err(|e| format!("server: {e}")),
        () = stdin_eof() => Ok(()),
    }
}

/// Resolves when stdin reaches EOF (or fails): the parent is gone.
async fn stdin_eof() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 256];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("llm-router-ratelimit: {e}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("llm-router-ratelimit: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(run(args)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("llm-router-ratelimit: {e}");
            1
        }
    };
    // Not waiting for the blocking stdin reader or open connections.
    std::process::exit(code);
}

#[cfg(test)]
mod tests;
