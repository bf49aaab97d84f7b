//! The thin binding to the proxy-wasm host: the root context compiles the configuration once,
//! each HTTP context hands bytes between Envoy and `RequestFlow`. Host statuses are handled
//! (never unwrapped), so an unexpected status cannot trap the VM.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};

use crate::clients::ClientUsage;
use crate::config::{self, Plan};
use crate::health::TargetHealth;
use crate::host::shared::{self, Record};
use crate::host::{Host, HostError, HostResult, MetricKind, CAS_RETRIES};
use crate::metrics::Metrics;
use crate::pipeline::{AttemptFlow, Flow, RequestFlow, StreamFlow};

/// The `root_id` that makes an instance the failover attempt filter (configured as an
/// upstream HTTP filter of the failover cluster); any other root id is the request filter.
const ATTEMPT_ROOT_ID: &str = "llm_router_attempt";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        let _ = hostcalls::log(LogLevel::Critical, &format!("llm-router panicked: {info}"));
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
}

impl Context for RouterRoot {}

impl RootContext for RouterRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => Vec::new(),
            Err(status) => {
                log::error!("llm-router: cannot read the plugin configuration: {status:?}");
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
                    hostcalls::get_property(vec!["plugin_root_id"]),
                    Ok(Some(id)) if id == ATTEMPT_ROOT_ID.as_bytes()
                );
                let metrics = Metrics::define(&plan, &mut WasmHost);
                log::info!("llm-router: {} stats defined", metrics.defined());
                self.metrics = Some(Rc::new(metrics));
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
        let plan = self.plan.clone()?;
        let metrics = self.metrics.clone().unwrap_or_default();
        let flow: Box<dyn StreamFlow> = if self.attempt_filter {
            Box::new(AttemptFlow::new(plan).with_metrics(metrics))
        } else {
            // Context ids are unique per worker; the clock tells workers apart.
            let seed = WasmHost.now_nanos() ^ (u64::from(context_id) << 32);
            Box::new(RequestFlow::new(plan, seed).with_metrics(metrics))
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

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        to_action(self.flow.on_response_headers(&mut self.host, end_of_stream))
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

/// `Host` over the proxy-wasm ABI of the current context.
struct WasmHost;

fn status(call: &str, s: Status) -> HostError {
    match s {
        Status::CasMismatch => HostError::CasMismatch,
        other => HostError::Status(format!("{call}: {other:?}")),
    }
}

impl Host for WasmHost {
    fn request_header(&self, name: &str) -> HostResult<Option<String>> {
        hostcalls::get_map_value(MapType::HttpRequestHeaders, name)
            .map_err(|s| status("get_map_value", s))
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> HostResult<()> {
        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value)
            .map_err(|s| status("set_map_value", s))
    }

    fn request_body(&self, len: usize) -> HostResult<Option<Vec<u8>>> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, len)
            .map_err(|s| status("get_buffer", s))
    }

    fn replace_request_body(&mut self, current_len: usize, body: &[u8]) -> HostResult<()> {
        hostcalls::set_buffer(BufferType::HttpRequestBody, 0, current_len, body)
            .map_err(|s| status("set_buffer", s))
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> HostResult<()> {
        hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value)
            .map_err(|s| status("set_map_value", s))
    }

    fn response_header(&self, name: &str) -> HostResult<Option<String>> {
        hostcalls::get_map_value(MapType::HttpResponseHeaders, name)
            .map_err(|s| status("get_map_value", s))
    }

    fn request_headers(&self) -> HostResult<Vec<(String, String)>> {
        hostcalls::get_map(MapType::HttpRequestHeaders).map_err(|s| status("get_map", s))
    }

    fn response_headers(&self) -> HostResult<Vec<(String, String)>> {
        hostcalls::get_map(MapType::HttpResponseHeaders).map_err(|s| status("get_map", s))
    }

    fn response_body(&self, len: usize) -> HostResult<Option<Vec<u8>>> {
        hostcalls::get_buffer(BufferType::HttpResponseBody, 0, len)
            .map_err(|s| status("get_buffer", s))
    }

    fn property(&self, path: &[&str]) -> HostResult<Option<Vec<u8>>> {
        hostcalls::get_property(path.to_vec()).map_err(|s| status("get_property", s))
    }

    fn set_property(&mut self, name: &str, value: &[u8]) -> HostResult<()> {
        // One path segment: Envoy stores it as filter state `wasm.<name>`.
        hostcalls::set_property(vec![name], Some(value)).map_err(|s| status("set_property", s))
    }

    fn replace_response_body(&mut self, current_len: usize, body: &[u8]) -> HostResult<()> {
        hostcalls::set_buffer(BufferType::HttpResponseBody, 0, current_len, body)
            .map_err(|s| status("set_buffer", s))
    }

    fn shared_data(&self, key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)> {
        hostcalls::get_shared_data(key).map_err(|s| status("get_shared_data", s))
    }

    fn set_shared_data(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        hostcalls::set_shared_data(key, Some(value), cas).map_err(|s| status("set_shared_data", s))
    }

    fn send_local_reply(
        &mut self,
        status_code: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HostResult<()> {
        hostcalls::send_http_response(status_code, headers.to_vec(), Some(body))
            .map_err(|s| status("send_http_response", s))
    }

    fn define_metric(&mut self, kind: MetricKind, name: &str) -> HostResult<u32> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Histogram => MetricType::Histogram,
        };
        hostcalls::define_metric(kind, name).map_err(|s| status("define_metric", s))
    }

    fn increment_metric(&mut self, id: u32, offset: i64) -> HostResult<()> {
        hostcalls::increment_metric(id, offset).map_err(|s| status("increment_metric", s))
    }

    fn record_metric(&mut self, id: u32, value: u64) -> HostResult<()> {
        hostcalls::record_metric(id, value).map_err(|s| status("record_metric", s))
    }

    fn now_nanos(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
}
