//! A stand-in for the router that traps its VM on request, for the failure-policy tests
//! (wasm-tests/test_vm_reload.py). Built by `make e2e` as the cargo example `vm_trap`:
//! target/wasm32-wasip1/release/examples/vm_trap.wasm, loaded by the bundled envoy/envoy.yaml
//! in place of llm_router.wasm (same vm_id, both root ids, same failure_policy).
//!
//! The request filter (root id `llm_router`), by request header:
//! * `x-trap: 1` (or `headers`): panics in on_http_request_headers; `x-trap: body` panics in
//!   on_http_request_body, `x-trap: response` in on_http_response_headers (after the upstream
//!   answered). The release profile has panic = "abort": the VM traps on `unreachable`, as
//!   the router's VM would on any panic.
//! * `x-fixture: pass`: lets the request through to the bundled fallback route (mock-a);
//!   `x-fixture: failover`: sends it through the failover hop, whose attempt filter (root id
//!   `llm_router_attempt`, same VM) points it at mock-a (`x-trap: attempt` panics there).
//! * otherwise: answers 200 itself with a JSON description of the VM that answered: `vm` (a
//!   random id drawn at the VM's first on_vm_start, so a reloaded VM has a new one),
//!   `configures` (how often on_configure ran in this VM: once per root id started in it),
//!   `requests` (answered by this VM), `hits` (answered by all VMs, counted in shared data),
//!   `vm_starts` (VMs started, Envoy's configuration canaries included, in shared data).
//!
//! Responses that passed through carry `x-fixture-vm` (and `x-fixture-attempt-vm` from the
//! attempt filter). on_vm_start and on_configure log a line each (Envoy's wasm log, info).

// A test fixture that traps on purpose: the SDK's panicking host calls are what it wants
// (clippy.toml forbids them in the router itself).
#![allow(clippy::disallowed_methods)]
#![cfg(target_arch = "wasm32")]

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, Status};

const ATTEMPT_ROOT_ID: &str = "llm_router_attempt";
const HITS: &str = "vm_trap.hits";
const VM_STARTS: &str = "vm_trap.vm_starts";

thread_local! {
    static VM_ID: Cell<u64> = const { Cell::new(0) };
    static CONFIGURES: Cell<u64> = const { Cell::new(0) };
    static REQUESTS: Cell<u64> = const { Cell::new(0) };
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        let _ = hostcalls::log(LogLevel::Critical, &format!("vm-trap fixture panicked: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(FixtureRoot { attempt: false }) });
}}

fn vm_id() -> String {
    format!("{:016x}", VM_ID.with(Cell::get))
}

fn bump(cell: &'static std::thread::LocalKey<Cell<u64>>) -> u64 {
    cell.with(|c| {
        c.set(c.get() + 1);
        c.get()
    })
}

/// Adds one to a shared-data counter (compare-and-swap); its new value, 0 if it failed.
fn shared_incr(key: &str) -> u64 {
    for _ in 0..32 {
        let (value, cas) = hostcalls::get_shared_data(key).unwrap_or((None, None));
        let n = value
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        // Without a cas (no record yet) the host writes unconditionally: a race between two
        // first writers loses one count, which these counters can afford.
        match hostcalls::set_shared_data(key, Some(n.to_string().as_bytes()), cas) {
            Ok(()) => return n,
            Err(Status::CasMismatch) => continue,
            Err(_) => return 0,
        }
    }
    0
}

fn shared_get(key: &str) -> u64 {
    match hostcalls::get_shared_data(key) {
        Ok((Some(v), _)) => String::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

struct FixtureRoot {
    attempt: bool,
}

impl Context for FixtureRoot {}

impl RootContext for FixtureRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        // Runs once per root context (per root id) in a VM: the first one draws the VM's
        // random id (std's RandomState takes its keys from WASI random_get).
        let new_vm = VM_ID.with(|id| {
            let fresh = id.get() == 0;
            if fresh {
                id.set(RandomState::new().hash_one(0u64) | 1);
            }
            fresh
        });
        let starts = if new_vm {
            shared_incr(VM_STARTS)
        } else {
            shared_get(VM_STARTS)
        };
        let _ = hostcalls::log(
            LogLevel::Info,
            &format!(
                "vm-trap fixture: on_vm_start vm={} new_vm={new_vm} vm_starts={starts}",
                vm_id()
            ),
        );
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.attempt = matches!(
            hostcalls::get_property(vec!["plugin_root_id"]),
            Ok(Some(id)) if id == ATTEMPT_ROOT_ID.as_bytes()
        );
        let n = bump(&CONFIGURES);
        let _ = hostcalls::log(
            LogLevel::Info,
            &format!(
                "vm-trap fixture: on_configure vm={} root={} configures={n}",
                vm_id(),
                if self.attempt {
                    ATTEMPT_ROOT_ID
                } else {
                    "llm_router"
                }
            ),
        );
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(FixtureHttp {
            attempt: self.attempt,
            trap: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct FixtureHttp {
    attempt: bool,
    /// Where this request asked the VM to trap (request filter: body or response).
    trap: Option<String>,
}

impl Context for FixtureHttp {}

fn trap(phase: &str) -> ! {
    panic!("trapping on purpose in {phase} (x-trap), vm={}", vm_id());
}

impl HttpContext for FixtureHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let asked = self.get_http_request_header("x-trap");
        if self.attempt {
            if asked.as_deref() == Some("attempt") {
                trap("the attempt filter's on_http_request_headers");
            }
            self.set_http_request_header("x-llm-router-cluster", Some("mock-a"));
            return Action::Continue;
        }
        match asked.as_deref() {
            Some("1") | Some("headers") => trap("on_http_request_headers"),
            Some("body") | Some("response") => {
                self.trap = asked;
                return Action::Continue;
            }
            _ => {}
        }
        match self.get_http_request_header("x-fixture").as_deref() {
            Some("pass") => Action::Continue,
            Some("failover") => {
                self.set_http_request_header("x-llm-router-cluster", Some("llm_failover"));
                Action::Continue
            }
            _ => {
                let requests = bump(&REQUESTS);
                let hits = shared_incr(HITS);
                let body = format!(
                    "{{\"vm\":\"{}\",\"configures\":{},\"requests\":{requests},\"hits\":{hits},\"vm_starts\":{}}}",
                    vm_id(),
                    CONFIGURES.with(Cell::get),
                    shared_get(VM_STARTS)
                );
                self.send_http_response(
                    200,
                    vec![("content-type", "application/json")],
                    Some(body.as_bytes()),
                );
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, _body_size: usize, end_of_stream: bool) -> Action {
        if end_of_stream && self.trap.as_deref() == Some("body") {
            trap("on_http_request_body");
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.trap.as_deref() == Some("response") {
            trap("on_http_response_headers");
        }
        let name = if self.attempt {
            "x-fixture-attempt-vm"
        } else {
            "x-fixture-vm"
        };
        self.set_http_response_header(name, Some(&vm_id()));
        Action::Continue
    }
}
