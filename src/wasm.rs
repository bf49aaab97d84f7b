//! The thin binding to the proxy-wasm host: the root context compiles the configuration once,
//! each HTTP context hands bytes between Envoy and `RequestFlow`. Host statuses are handled
//! (never unwrapped), so an unexpected status cannot trap the VM. No SDK `hostcalls`
//! function is called (they unwrap: see `host::abi`) but the gRPC call; the SDK only
//! dispatches callbacks.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

use crate::clients::ClientUsage;
use crate::config::{self, Plan};
use crate::health::TargetHealth;
use crate::host::shared::{self, Record};
use crate::host::{
    abi, GrpcCall, HeaderPairs, Host, HostError, HostResult, MetricKind, CAS_RETRIES,
};
use crate::metrics::pending::FLUSH_PERIOD_MS;
use crate::metrics::Metrics;
use crate::pipeline::context_retry::{self, MIN_ENVOY};
use crate::pipeline::{AttemptFlow, Flow, RequestFlow, StreamFlow, Unconfigured};

/// The `root_id` that makes an instance the failover attempt filter (configured as an
/// upstream HTTP filter of the failover cluster); any other root id is the request filter.
const ATTEMPT_ROOT_ID: &str = "llm_router_attempt";

proxy_wasm::main! {{
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    std::panic::set_hook(Box::new(|info| {
        let _ = abi::log(5, &format!("llm-router panicked: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(RouterRoot::default()) });
}}

#[derive(Default)]
struct RouterRoot {
    plan: Option<Rc<Plan>>,
    /// The stats of `plan`, defined in this VM.
    metrics: Option<Rc<Metrics>>,
    /// This instance rewrites failover attempts (see [`ATTEMPT_ROOT_ID`]).
    attempt_filter: bool,
    /// A context-length 400 may fail over: this Envoy survives it.
    context_retry: bool,
    /// The stats of configurations replaced while requests still held them: flushed on
    /// every tick until no request does.
    retired: Vec<Rc<Metrics>>,
    /// The clock at configuration: with the context id, each request's `weighted` seed
    /// (no clock read per request).
    seed: u64,
}

impl Context for RouterRoot {
    /// The plugin goes away: what the last tick did not report is reported now.
    fn on_done(&mut self) -> bool {
        self.flush_stats();
        true
    }
}

impl RouterRoot {
    /// Hands the held stats to Envoy, of this configuration and of replaced ones that
    /// requests still hold.
    fn flush_stats(&mut self) {
        if let Some(m) = &self.metrics {
            m.flush(&mut WasmHost);
        }
        self.retired.retain(|m| {
            m.flush(&mut WasmHost);
            Rc::strong_count(m) > 1
        });
    }
}

/// Whether this Envoy may retry a context-length 400 that the attempt filter held (Envoy
/// before [`MIN_ENVOY`] crashes doing so); read once per VM from the node's build version
/// (the `xds.node` attribute).
fn context_retry_supported() -> bool {
    let part = |name: &str| {
        let path = ["xds", "node", "user_agent_build_version", "version", name];
        let bytes = abi::property(&path).ok().flatten()?;
        Some(u64::from_le_bytes(
            <[u8; 8]>::try_from(bytes.as_slice()).ok()?,
        ))
    };
    let version = part("major_number").zip(part("minor_number"));
    let on = context_retry::envoy_supports_context_retry(version);
    if !on {
        let seen = version.map_or("an Envoy of unknown version".to_owned(), |(a, b)| {
            format!("Envoy {a}.{b}, older than {}.{},", MIN_ENVOY.0, MIN_ENVOY.1)
        });
        log::warn!(
            "llm-router: a provider's context-length 400 is not failed over: {seen} would \
             crash retrying it"
        );
    }
    on
}

impl RootContext for RouterRoot {
    fn on_tick(&mut self) {
        self.flush_stats();
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = match abi::buffer(abi::PLUGIN_CONFIGURATION, 0, usize::MAX) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => Vec::new(),
            Err(status) => {
                log::error!(
                    "llm-router: cannot read the plugin configuration: {}",
                    status.name()
                );
                return false;
            }
        };
        match config::compile(&raw, &|name| std::env::var(name).ok()) {
            Ok(plan) => {
                for up in &plan.upstreams {
                    if let Some(var) = &up.missing_key_env {
                        log::warn!(
                            "llm-router: upstream `{}` is skipped: environment variable {var} is not set",
                            up.name
                        );
                    }
                }
                log::info!(
                    "llm-router: configuration loaded: {} upstreams, {} model aliases, {} rules",
                    plan.upstreams.len(),
                    plan.aliases.len(),
                    plan.rules.len()
                );
                if plan.health.enabled {
                    ensure_records::<TargetHealth>("health key", plan.targets.keys());
                }
                let clients = plan.clients.iter().flat_map(|c| &c.clients);
                let ledgers = clients.filter(|c| c.limits.any()).map(|c| &c.ledger_key);
                ensure_records::<ClientUsage>("client ledger", ledgers);
                self.attempt_filter = matches!(
                    abi::property(&["plugin_root_id"]),
                    Ok(Some(id)) if id == ATTEMPT_ROOT_ID.as_bytes()
                );
                if self.attempt_filter {
                    self.context_retry = context_retry_supported();
                }
                // A new configuration's stats replace the old: report what they hold.
                self.flush_stats();
                let metrics = Metrics::define(&plan, &mut WasmHost);
                log::info!("llm-router: {} stats defined", metrics.defined());
                // Stats are held in the VM and handed to Envoy on the tick.
                if let Err(s) = abi::set_tick_period(FLUSH_PERIOD_MS) {
                    log::warn!("llm-router: no tick, stats not reported: {}", s.name());
                }
                if let Some(old) = self.metrics.take() {
                    self.retired.push(old);
                }
                self.metrics = Some(Rc::new(metrics));
                self.seed = WasmHost.now_nanos();
                self.plan = Some(Rc::new(plan));
                true
            }
            Err(e) => {
                log::error!("llm-router: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let Some(plan) = self.plan.clone() else {
            return Some(Box::new(RouterHttp {
                flow: Box::new(Unconfigured),
                host: WasmHost,
            }));
        };
        let metrics = self.metrics.clone().unwrap_or_default();
        let flow: Box<dyn StreamFlow> = if self.attempt_filter {
            let flow = AttemptFlow::new(plan).with_context_retry(self.context_retry);
            Box::new(flow.with_metrics(metrics))
        } else {
            // Context ids are unique per worker; the clock at configuration tells workers
            // apart (RequestFlow mixes the seed before use).
            let seed = self.seed ^ (u64::from(context_id) << 32);
            let flow = RequestFlow::new(plan, seed);
            Box::new(flow.with_metrics(metrics))
        };
        Some(Box::new(RouterHttp {
            flow,
            host: WasmHost,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One HTTP stream: the host's events go to the flow (the request filter's or, on the
/// failover cluster, the attempt filter's).
struct RouterHttp {
    flow: Box<dyn StreamFlow>,
    host: WasmHost,
}

impl Context for RouterHttp {
    /// A failover attempt that failed ends when the router retries: its context goes away,
    /// maybe without an access-log call. Finishing is once only either way.
    fn on_done(&mut self) -> bool {
        self.flow.on_log(&mut self.host);
        true
    }

    /// The rate-limit service answered (`status_code` 0) or the call failed.
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        self.grpc_answer(token_id, status_code, response_size);
    }
}

impl HttpContext for RouterHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        to_action(self.flow.on_request_headers(&mut self.host, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        to_action(
            self.flow
                .on_request_body(&mut self.host, body_size, end_of_stream),
        )
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        to_action(self.flow.on_request_trailers(&mut self.host))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        to_action(self.flow.on_response_headers(&mut self.host, end_of_stream))
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        to_action(self.flow.on_response_trailers(&mut self.host))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        to_action(
            self.flow
                .on_response_body(&mut self.host, body_size, end_of_stream),
        )
    }

    fn on_log(&mut self) {
        self.flow.on_log(&mut self.host);
    }
}

impl RouterHttp {
    fn grpc_answer(&mut self, token: u32, status: u32, size: usize) {
        self.flow
            .on_grpc_response(&mut self.host, token, status, size);
    }
}

/// Creates the shared-data records (`R`) under `keys` ahead of traffic, so that the first
/// requests of several workers never race to create one. Failures are only logged: updates
/// create missing keys as well.
fn ensure_records<'k, R: Record>(what: &str, keys: impl Iterator<Item = &'k String>) {
    let mut host = WasmHost;
    for key in keys {
        if let Err(e) = shared::ensure::<R>(&mut host, key, CAS_RETRIES) {
            log::warn!("llm-router: {what} {key}: {e}");
        }
    }
}

fn to_action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

/// `Host` over the proxy-wasm ABI of the current context (`host::abi`: every status is a
/// value, header values are bytes).
struct WasmHost;

fn status(call: &str, s: abi::Status) -> HostError {
    match s {
        abi::CAS_MISMATCH => HostError::CasMismatch,
        other => HostError::Status(format!("{call}: {}", other.name())),
    }
}

/// A single header read as text: a value that is not UTF-8 is an error, never a panic.
fn text_header(kind: u32, name: &str) -> HostResult<Option<String>> {
    match abi::header(kind, name).map_err(|s| status("get_header_map_value", s))? {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| HostError::Status(format!("header {name}: not UTF-8"))),
    }
}

impl Host for WasmHost {
    fn request_header(&self, name: &str) -> HostResult<Option<String>> {
        text_header(abi::REQUEST_HEADERS, name)
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> HostResult<()> {
        abi::set_header(abi::REQUEST_HEADERS, name, value).map_err(|s| status("set_header", s))
    }

    fn set_request_headers(&mut self, headers: &HeaderPairs) -> HostResult<()> {
        abi::set_header_map(abi::REQUEST_HEADERS, headers)
            .map_err(|s| status("set_header_map_pairs", s))
    }

    fn set_response_headers(&mut self, headers: &HeaderPairs) -> HostResult<()> {
        abi::set_header_map(abi::RESPONSE_HEADERS, headers)
            .map_err(|s| status("set_header_map_pairs", s))
    }

    fn request_body(&self, len: usize) -> HostResult<Option<Vec<u8>>> {
        abi::buffer(abi::REQUEST_BODY, 0, len).map_err(|s| status("get_buffer_bytes", s))
    }

    fn replace_request_body(&mut self, current_len: usize, body: &[u8]) -> HostResult<()> {
        abi::set_buffer(abi::REQUEST_BODY, 0, current_len, body)
            .map_err(|s| status("set_buffer_bytes", s))
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> HostResult<()> {
        abi::set_header(abi::RESPONSE_HEADERS, name, value).map_err(|s| status("set_header", s))
    }

    fn response_header(&self, name: &str) -> HostResult<Option<String>> {
        text_header(abi::RESPONSE_HEADERS, name)
    }

    fn request_headers(&self) -> HostResult<HeaderPairs> {
        abi::header_map(abi::REQUEST_HEADERS).map_err(|s| status("get_header_map_pairs", s))
    }

    fn response_headers(&self) -> HostResult<HeaderPairs> {
        abi::header_map(abi::RESPONSE_HEADERS).map_err(|s| status("get_header_map_pairs", s))
    }

    fn response_body(&self, len: usize) -> HostResult<Option<Vec<u8>>> {
        abi::buffer(abi::RESPONSE_BODY, 0, len).map_err(|s| status("get_buffer_bytes", s))
    }

    fn response_body_range(&self, start: usize, len: usize) -> HostResult<Option<Vec<u8>>> {
        abi::buffer(abi::RESPONSE_BODY, start, len).map_err(|s| status("get_buffer_bytes", s))
    }

    fn property(&self, path: &[&str]) -> HostResult<Option<Vec<u8>>> {
        abi::property(path).map_err(|s| status("get_property", s))
    }

    fn set_property(&mut self, name: &str, value: &[u8]) -> HostResult<()> {
        // One path segment: Envoy stores it as filter state `wasm.<name>`.
        abi::set_property(&[name], value).map_err(|s| status("set_property", s))
    }

    fn replace_response_body(&mut self, current_len: usize, body: &[u8]) -> HostResult<()> {
        abi::set_buffer(abi::RESPONSE_BODY, 0, current_len, body)
            .map_err(|s| status("set_buffer_bytes", s))
    }

    fn shared_data(&self, key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)> {
        abi::shared_data(key).map_err(|s| status("get_shared_data", s))
    }

    fn set_shared_data(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        abi::set_shared_data(key, value, cas).map_err(|s| status("set_shared_data", s))
    }

    fn send_local_reply(
        &mut self,
        status_code: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HostResult<()> {
        abi::send_local_response(status_code, headers, body)
            .map_err(|s| status("send_local_response", s))
    }

    fn define_metric(&mut self, kind: MetricKind, name: &str) -> HostResult<u32> {
        let kind = match kind {
            MetricKind::Counter => 0,
            MetricKind::Gauge => 1,
            MetricKind::Histogram => 2,
        };
        abi::define_metric(kind, name).map_err(|s| status("define_metric", s))
    }

    fn increment_metric(&mut self, id: u32, offset: i64) -> HostResult<()> {
        abi::increment_metric(id, offset).map_err(|s| status("increment_metric", s))
    }

    fn record_metric(&mut self, id: u32, value: u64) -> HostResult<()> {
        abi::record_metric(id, value).map_err(|s| status("record_metric", s))
    }

    /// Through the SDK, which registers the call for this stream's context (a raw call's
    /// answer would reach no one). The SDK panics on a status other than Ok, ParseFailure
    /// or InternalFailure: Envoy returns another only for a gRPC service it cannot build a
    /// client for (BadArgument; never for an `envoy_grpc` cluster name, which is all the
    /// router sends) or for memory outside the VM.
    #[allow(clippy::disallowed_methods)]
    fn grpc_call(&mut self, call: &GrpcCall) -> HostResult<u32> {
        let upstream = std::str::from_utf8(call.upstream)
            .map_err(|_| HostError::Status("grpc_call: the service is not ASCII".to_owned()))?;
        proxy_wasm::hostcalls::dispatch_grpc_call(
            upstream,
            call.service,
            call.method,
            Vec::new(),
            Some(call.message),
            Duration::from_millis(u64::from(call.timeout_ms)),
        )
        .map_err(|s| HostError::Status(format!("dispatch_grpc_call: {s:?}")))
    }

    fn grpc_response(&self, size: usize) -> HostResult<Option<Vec<u8>>> {
        abi::buffer(abi::GRPC_RECEIVE_BUFFER, 0, size).map_err(|s| status("get_buffer_bytes", s))
    }

    fn resume_request(&mut self) -> HostResult<()> {
        abi::resume_request().map_err(|s| status("continue_stream", s))
    }

    fn now_nanos(&self) -> u64 {
        abi::now_nanos().unwrap_or(0)
    }
}

/// `log` records to Envoy's log through `abi::log` (the SDK's logger unwraps the status).
struct HostLogger;

static LOGGER: HostLogger = HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // Proxy-wasm's levels: trace 0, debug 1, info 2, warn 3, error 4, critical 5.
        let level = match record.level() {
            log::Level::Trace => 0,
            log::Level::Debug => 1,
            log::Level::Info => 2,
            log::Level::Warn => 3,
            log::Level::Error => 4,
        };
        let _ = abi::log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}
