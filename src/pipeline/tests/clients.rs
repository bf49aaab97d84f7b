//! Client keys, limits and policies through `RequestFlow` against `MockHost`.

use super::*;

use crate::audit::STATE_LOG;
use crate::clients::ClientUsage;
use crate::host::shared;
use crate::metrics::Metrics;
use crate::sha256::{key_id, sha256_hex};

/// 2025-01-01T00:00:00Z: on a 10 s bucket edge.
pub(super) const T0: u64 = 1_735_689_600_000;
/// 2026-11-23T15:32:21.806Z (November 2026).
pub(super) const NOV_2026: u64 = 1_795_447_941_806;
/// 2026-12-01T00:00:00Z.
pub(super) const DEC_2026: u64 = 1_796_083_200_000;

/// One user message of 40 characters: an estimate of ceil(40 / 4) + 4 = 14 prompt tokens.
const PROMPT_14: &str =
    r#""messages":[{"role":"user","content":"0123456789012345678901234567890123456789"}]"#;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Upstreams with and without a key, priced and unpriced aliases, and clients of every kind.
pub(super) fn clients_config() -> Value {
    let h = |k: &str| sha256_hex(k.as_bytes());
    json!({
        "upstreams": {
            "openai": {"cluster": "openai-cluster", "host": "api.openai.com",
                       "auth": {"type": "bearer", "key_env": "OPENAI_API_KEY"}},
            "local": {"cluster": "vllm"}
        },
        "models": {
            "fast": {"targets": [{"upstream": "openai", "model": "gpt-4o-mini",
                                  "price": {"input": 1, "output": 10}}]},
            "smart": {"targets": [{"upstream": "openai", "model": "gpt-4o"}]},
            // Best first; the second is far cheaper. (A target has one price: gpt-4.1 is
            // priced here, gpt-4o of `smart` is not.)
            "mixed": {"targets": [
                {"upstream": "openai", "model": "gpt-4.1", "price": {"input": 5, "output": 20}},
                {"upstream": "local", "model": "qwen2.5-7b", "price": {"input": 0.1, "output": 0.1}}]},
            "thrifty": {"strategy": "cheapest", "targets": [
                {"upstream": "openai", "model": "gpt-4.1", "price": {"input": 5, "output": 20}},
                {"upstream": "local", "model": "qwen2.5-7b", "price": {"input": 0.1, "output": 0.1}}]}
        },
        "default": {"use_model": "mixed"},
        "clients": {
            "identity_header": "x-client-name",
            "keys": [
                {"name": "team-a", "key_sha256": h("sk-team-a"), "models": ["fast", "gpt-4o-mini*"],
                 "rpm": 2},
                {"name": "team-b", "key_sha256": h("sk-team-b"), "profile": "cheapest"},
                {"name": "team-c", "key_sha256": h("sk-team-c"), "tpm": 100},
                {"name": "team-d", "key_sha256": h("sk-team-d"), "monthly_budget": 0.001},
                {"name": "local-only", "key_sha256": h("sk-local"), "models": ["local/*"]},
                {"name": "nothing", "key_sha256": h("sk-nothing"), "models": ["nope-*"]},
                {"name": "team-e", "key_sha256": h("sk-team-e"), "rpm": 1},
                {"name": "team-q", "key_sha256": h("sk-team-q"), "profile": "quality"},
                {"name": "team-f", "key_sha256": h("sk-team-f"), "rpm": 5, "tpm": 1000}
            ]
        }
    })
}

fn clients_plan() -> Plan {
    plan_json(&clients_config())
}

fn optional_plan() -> Plan {
    let mut config = clients_config();
    config["clients"]["required"] = json!(false);
    plan_json(&config)
}

/// A POST to `path` with `body` and `extra` headers (no credential unless given).
fn request(path: &str, body: &str, extra: &[(&str, &str)]) -> MockHost {
    let len = body.len().to_string();
    let mut headers = vec![
        (":method", "POST"),
        (":path", path),
        (":authority", "router.local"),
        ("content-type", "application/json"),
        ("content-length", len.as_str()),
    ];
    headers.extend_from_slice(extra);
    MockHost::with_request(&headers, body.as_bytes())
}

/// A chat request with `authorization: Bearer <key>`, plus other credential headers that
/// must not reach the provider either.
pub(super) fn keyed(key: &str, body: &str) -> MockHost {
    let bearer = format!("Bearer {key}");
    request(
        CHAT,
        body,
        &[
            ("authorization", &bearer),
            ("x-api-key", "decoy-x"),
            ("api-key", "decoy-api"),
        ],
    )
}

fn anonymous(body: &str) -> MockHost {
    request(CHAT, body, &[])
}

fn get_models(extra: &[(&str, &str)]) -> MockHost {
    let mut headers = vec![
        (":method", "GET"),
        (":path", "/v1/models"),
        (":authority", "router.local"),
    ];
    headers.extend_from_slice(extra);
    MockHost::with_request(&headers, b"")
}

pub(super) fn model(m: &str) -> String {
    format!(r#"{{"model":"{m}",{PROMPT_14}}}"#)
}

fn auto() -> String {
    model("auto")
}

pub(super) fn nanos(ms: u64) -> u64 {
    ms * 1_000_000
}

/// One router (plan and stats) with the shared data and stats of the host it runs in;
/// requests come one after another through fresh flows.
pub(super) struct Router {
    plan: Rc<Plan>,
    metrics: Rc<Metrics>,
    pub(super) host: MockHost,
}

impl Router {
    pub(super) fn new(plan: Plan) -> Router {
        let mut host = MockHost::default();
        let metrics = Rc::new(Metrics::define(&plan, &mut host));
        host.now_nanos = nanos(T0 + 1_000);
        Router {
            plan: Rc::new(plan),
            metrics,
            host,
        }
    }

    pub(super) fn at(&mut self, ms: u64) -> &mut Router {
        self.host.now_nanos = nanos(ms);
        self
    }

    /// Takes the request of `req` (headers and body) and runs it up to the upstream.
    pub(super) fn send(&mut self, req: MockHost) -> (RequestFlow, (Flow, Flow)) {
        let h = &mut self.host;
        h.request_headers = req.request_headers;
        h.request_body = req.request_body;
        h.response_headers.clear();
        h.response_body.clear();
        h.local_reply = None;
        h.headers_sent = false;
        h.properties.clear();
        h.filter_state.clear();
        let mut flow =
            RequestFlow::new(Rc::clone(&self.plan), 7).with_metrics(Rc::clone(&self.metrics));
        let flows = run(&mut flow, h);
        (flow, flows)
    }

    /// Sends `req` and expects it routed.
    pub(super) fn routed(&mut self, req: MockHost) -> RequestFlow {
        let (flow, flows) = self.send(req);
        assert_eq!(
            flows,
            (Flow::Pause, Flow::Continue),
            "expected routed; local reply: {:?}",
            self.host
                .local_reply
                .as_ref()
                .map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()))
        );
        flow
    }

    /// Sends `req` and expects a local error reply.
    pub(super) fn refused(&mut self, req: MockHost) -> (RequestFlow, Answer) {
        let (flow, (_, last)) = self.send(req);
        assert_eq!(last, Flow::Pause, "a local reply stops the stream");
        let answer = error_reply(&self.host);
        (flow, answer)
    }

    /// The upstream answers `usage` (a JSON object or nothing) with 200 and
    /// `provider_headers`; the stream ends (`on_log`).
    pub(super) fn complete(
        &mut self,
        flow: &mut RequestFlow,
        usage: Option<&str>,
        provider_headers: &[(&str, &str)],
    ) {
        self.respond(flow, provider_headers);
        self.end(flow, usage);
    }

    /// The response headers (status 200, JSON, plus `provider_headers`).
    pub(super) fn respond(&mut self, flow: &mut RequestFlow, provider_headers: &[(&str, &str)]) {
        let h = &mut self.host;
        h.headers_sent = true;
        h.response_headers = vec![
            (":status".to_owned(), "200".to_owned()),
            ("content-type".to_owned(), "application/json".to_owned()),
        ];
        h.response_headers.extend(
            provider_headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        flow.on_response_headers(h, false);
    }

    /// The response body (with `usage`), then the end of the stream.
    pub(super) fn end(&mut self, flow: &mut RequestFlow, usage: Option<&str>) {
        let h = &mut self.host;
        let body = match usage {
            Some(u) => format!(r#"{{"choices":[],"usage":{u}}}"#),
            None => r#"{"choices":[]}"#.to_owned(),
        };
        h.response_body = body.into_bytes();
        let len = h.response_body.len();
        flow.on_response_body(h, len, true);
        h.set_int_property("response.code", 200);
        flow.on_log(h);
    }

    /// The host, with the stats held in the VM handed to it (as on the root's tick).
    pub(super) fn flushed(&mut self) -> &MockHost {
        self.metrics.flush(&mut self.host);
        &self.host
    }

    pub(super) fn stat(&mut self, client: &str, stat: &str) -> i64 {
        let name = format!("llm_router.client.{client}.{stat}");
        self.flushed()
            .metric(&name)
            .unwrap_or_else(|| panic!("stat {name} is not defined"))
    }

    pub(super) fn ledger(&self, client: &str) -> ClientUsage {
        shared::read(&self.host, &format!("llm_router.c.{client}")).expect("shared data")
    }

    fn log(&self) -> Value {
        let bytes = self
            .host
            .filter_state
            .get(STATE_LOG)
            .expect("an access-log record");
        serde_json::from_slice(bytes).expect("JSON")
    }

    fn log_text(&self) -> String {
        String::from_utf8(self.host.filter_state[STATE_LOG].clone()).expect("UTF-8")
    }
}

/// A local error reply: status, the `error` object, and the headers besides content-type.
pub(super) struct Answer {
    pub(super) status: u32,
    error: Value,
    headers: Vec<(String, String)>,
}

impl Answer {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn header_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        names
    }

    /// `type`, `code` and `param` of the error.
    pub(super) fn kind(&self) -> (&str, &str, Option<&str>) {
        (
            self.error["type"].as_str().unwrap_or_default(),
            self.error["code"].as_str().unwrap_or_default(),
            self.error["param"].as_str(),
        )
    }

    fn message(&self) -> &str {
        self.error["message"].as_str().unwrap_or_default()
    }
}

/// The local reply, checked for the OpenAI error shape and a leading JSON content type.
pub(super) fn error_reply(host: &MockHost) -> Answer {
    let r = host.local_reply.as_ref().expect("a local reply was sent");
    assert_eq!(
        r.headers.first(),
        Some(&("content-type".to_owned(), "application/json".to_owned()))
    );
    let v: Value = serde_json::from_slice(&r.body).expect("the reply body is JSON");
    let err = v["error"].clone();
    let mut keys: Vec<&str> = err
        .as_object()
        .expect("an `error` object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message", "param", "type"], "{v}");
    assert!(err["param"].is_null() || err["param"].is_string());
    Answer {
        status: r.status,
        error: err,
        headers: r.headers[1..].to_vec(),
    }
}

/// Where the routed request goes: the cluster header and the model in the body.
pub(super) fn destination(host: &MockHost) -> (String, String) {
    let body: Value = serde_json::from_slice(&host.request_body).expect("JSON body");
    (
        host.header("x-llm-router-cluster")
            .unwrap_or_default()
            .to_owned(),
        body["model"].as_str().unwrap_or_default().to_owned(),
    )
}

fn dest(cluster: &str, model: &str) -> (String, String) {
    (cluster.to_owned(), model.to_owned())
}

fn no_client_credentials(host: &MockHost) -> bool {
    ["x-api-key", "api-key", "x-client-name"]
        .iter()
        .all(|h| host.header(h).is_none())
}

// ---------------------------------------------------------------------------------------
// 401
// ---------------------------------------------------------------------------------------

#[test]
fn a_request_without_a_key_gets_401_before_its_body_is_read() {
    let mut r = Router::new(clients_plan());
    let mut host = anonymous(&auto());
    r.host.request_headers = std::mem::take(&mut host.request_headers);
    r.host.request_body = host.request_body;
    let mut flow = RequestFlow::new(Rc::clone(&r.plan), 7).with_metrics(Rc::clone(&r.metrics));
    assert_eq!(flow.on_request_headers(&mut r.host, false), Flow::Pause);
    let a = error_reply(&r.host);
    assert_eq!(a.status, 401);
    assert_eq!(a.kind(), ("invalid_request_error", "missing_api_key", None));
    assert_eq!(
        a.headers,
        [("www-authenticate".to_owned(), "Bearer".to_owned())]
    );
    // The body that follows is not looked at.
    let len = r.host.request_body.len();
    assert_eq!(flow.on_request_body(&mut r.host, len, true), Flow::Pause);
    assert_eq!(
        r.flushed().metric("llm_router.clients.unauthorized"),
        Some(1)
    );
    flow.on_log(&mut r.host);
    let log = r.log();
    assert_eq!(
        (
            log["status"].as_u64(),
            log["error"].as_str(),
            log["endpoint"].as_str()
        ),
        (Some(401), Some("missing_api_key"), Some("chat"))
    );
    assert!(
        log["client"].is_null() && log["client_key_id"].is_null(),
        "{log}"
    );
}

#[test]
fn an_unknown_key_gets_401_invalid_api_key_without_repeating_it() {
    let mut r = Router::new(clients_plan());
    for header in ["authorization", "x-api-key", "api-key"] {
        let value = if header == "authorization" {
            "Bearer sk-wrong-key"
        } else {
            "sk-wrong-key"
        };
        let (mut flow, a) = r.refused(request(CHAT, &auto(), &[(header, value)]));
        assert_eq!(a.status, 401, "{header}");
        assert_eq!(a.kind(), ("invalid_request_error", "invalid_api_key", None));
        assert_eq!(a.header("www-authenticate"), Some("Bearer"));
        assert!(!a.message().contains("sk-wrong"), "{}", a.message());
        flow.on_log(&mut r.host);
        let log = r.log();
        assert_eq!(log["error"], "invalid_api_key");
        assert_eq!(log["client_key_id"], key_id("sk-wrong-key"));
        assert!(!r.log_text().contains("sk-wrong"));
    }
    assert_eq!(
        r.flushed().metric("llm_router.clients.unauthorized"),
        Some(3)
    );
}

#[test]
fn a_key_in_x_api_key_or_api_key_identifies_too() {
    let mut r = Router::new(clients_plan());
    for header in ["x-api-key", "api-key", "X-Api-Key"] {
        let req = request(CHAT, &model("smart"), &[(header, "sk-team-b")]);
        let mut flow = r.routed(req);
        assert!(no_client_credentials(&r.host), "{header}");
        assert_eq!(
            r.host.header("authorization"),
            Some("Bearer key-OPENAI_API_KEY"),
            "the upstream's own key"
        );
        r.complete(&mut flow, None, &[]);
        assert_eq!(r.log()["client"], "team-b");
    }
    assert_eq!(r.stat("team-b", "requests"), 3);
}

#[test]
fn an_unknown_identity_gets_401_even_with_a_valid_key() {
    let mut r = Router::new(clients_plan());
    let req = request(
        CHAT,
        &auto(),
        &[
            ("x-client-name", "ghost"),
            ("authorization", "Bearer sk-team-b"),
        ],
    );
    let (_, a) = r.refused(req);
    assert_eq!((a.status, a.kind().1), (401, "invalid_api_key"));
}

#[test]
fn models_and_other_paths_need_a_key_too() {
    let mut r = Router::new(clients_plan());
    // GET /v1/models.
    let (mut flow, _) = r.send(get_models(&[]));
    let a = error_reply(&r.host);
    assert_eq!((a.status, a.kind().1), (401, "missing_api_key"));
    flow.on_log(&mut r.host);
    assert_eq!(r.log()["endpoint"], "models");
    let (_, flows) = r.send(get_models(&[("authorization", "Bearer sk-team-a")]));
    assert_eq!(flows.0, Flow::Pause);
    assert_eq!(r.host.local_reply.as_ref().map(|l| l.status), Some(200));

    // Another path, passed through when authorized.
    let files = |extra: &[(&str, &str)]| request("/v1/files", "{}", extra);
    let (mut flow, _) = r.send(files(&[]));
    let a = error_reply(&r.host);
    assert_eq!((a.status, a.kind().1), (401, "missing_api_key"));
    assert_eq!(a.header("www-authenticate"), Some("Bearer"));
    flow.on_log(&mut r.host);
    assert_eq!(r.log()["endpoint"], "other");
    let (_, a) = r.refused(files(&[("api-key", "nope")]));
    assert_eq!((a.status, a.kind().1), (401, "invalid_api_key"));
    assert_eq!(
        r.flushed().metric("llm_router.clients.unauthorized"),
        Some(3)
    );

    let (_, flows) = r.send(files(&[
        ("authorization", "Bearer sk-team-a"),
        ("x-api-key", "decoy"),
        ("api-key", "decoy"),
    ]));
    assert_eq!(flows, (Flow::Continue, Flow::Continue));
    assert!(r.host.local_reply.is_none());
    assert_eq!(
        r.host.header("authorization"),
        None,
        "the key stays with the router"
    );
    assert!(no_client_credentials(&r.host));
    assert_eq!(
        r.host.header(":path"),
        Some("/v1/files"),
        "otherwise untouched"
    );
}

#[test]
fn not_required_lets_anonymous_and_unknown_callers_through() {
    let mut r = Router::new(optional_plan());
    let mut flow = r.routed(anonymous(&auto()));
    assert_eq!(destination(&r.host), dest("openai-cluster", "gpt-4.1"));
    r.complete(&mut flow, None, &[("x-ratelimit-limit-requests", "10000")]);
    assert_eq!(
        r.host.response_header("x-ratelimit-limit-requests"),
        Some("10000"),
        "no client, no client limits: the provider's headers stay"
    );
    let log = r.log();
    assert!(
        log["client"].is_null() && log["client_key_id"].is_null(),
        "{log}"
    );

    // An unknown key is anonymous too: logged by its id, never passed on.
    let mut flow = r.routed(keyed("sk-unknown", &model("smart")));
    assert_eq!(
        r.host.header("authorization"),
        Some("Bearer key-OPENAI_API_KEY")
    );
    assert!(no_client_credentials(&r.host));
    r.complete(&mut flow, None, &[]);
    let log = r.log();
    assert!(log["client"].is_null());
    assert_eq!(log["client_key_id"], key_id("sk-unknown"));
    assert_eq!(
        r.flushed().metric("llm_router.clients.unauthorized"),
        Some(0)
    );

    // Anonymous requests have no limits; known keys keep theirs.
    for _ in 0..5 {
        r.routed(anonymous(&model("smart")));
    }
    r.routed(keyed("sk-team-e", &model("smart")));
    let (_, a) = r.refused(keyed("sk-team-e", &model("smart")));
    assert_eq!(a.status, 429);
    // And their models.
    let (_, a) = r.refused(keyed("sk-team-a", &model("smart")));
    assert_eq!(a.status, 403);

    // Passthrough paths lose the credentials as well.
    let (_, flows) = r.send(request(
        "/v1/files",
        "{}",
        &[
            ("authorization", "Bearer sk-unknown"),
            ("x-client-name", "who"),
        ],
    ));
    assert_eq!(flows.0, Flow::Continue);
    assert_eq!(r.host.header("authorization"), None);
    assert!(no_client_credentials(&r.host));
}

// ---------------------------------------------------------------------------------------
// Credentials and identity never reach a provider
// ---------------------------------------------------------------------------------------

#[test]
fn credentials_are_replaced_by_the_upstreams_key() {
    let mut r = Router::new(clients_plan());
    r.routed(keyed("sk-team-b", &model("smart")));
    assert_eq!(
        r.host.header("authorization"),
        Some("Bearer key-OPENAI_API_KEY")
    );
    assert!(no_client_credentials(&r.host));
    // An upstream without a key gets none at all.
    r.routed(keyed("sk-local", &auto()));
    assert_eq!(destination(&r.host), dest("vllm", "qwen2.5-7b"));
    assert_eq!(r.host.header("authorization"), None);
    assert!(no_client_credentials(&r.host));
}

#[test]
fn the_identity_header_names_the_client_and_is_removed() {
    let mut r = Router::new(clients_plan());
    // The auth filter in front verified a JWT and named the client.
    let req = request(
        CHAT,
        &model("fast"),
        &[
            ("authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig"),
            ("x-client-name", "team-a"),
        ],
    );
    let mut flow = r.routed(req);
    assert_eq!(
        r.host.header("authorization"),
        Some("Bearer key-OPENAI_API_KEY")
    );
    assert!(no_client_credentials(&r.host));
    r.complete(&mut flow, None, &[]);
    let log = r.log();
    assert_eq!(log["client"], "team-a");
    assert!(log["client_key_id"].is_null());
    assert!(!r.log_text().contains("eyJ"));
    // It is team-a with team-a's models.
    let req = request(CHAT, &model("smart"), &[("x-client-name", "team-a")]);
    let (_, a) = r.refused(req);
    assert_eq!(a.status, 403);
    // Passed-through paths lose it as well.
    let (_, flows) = r.send(request(
        "/v1/files",
        "{}",
        &[("x-client-name", "team-b"), ("authorization", "Bearer jwt")],
    ));
    assert_eq!(flows.0, Flow::Continue);
    assert_eq!(r.host.header("authorization"), None);
    assert!(no_client_credentials(&r.host));
}

// ---------------------------------------------------------------------------------------
// 403 and the order of checks
// ---------------------------------------------------------------------------------------

#[test]
fn an_explicit_model_outside_the_globs_gets_403() {
    let mut r = Router::new(clients_plan());
    let (mut flow, a) = r.refused(keyed("sk-team-a", &model("smart")));
    assert_eq!(a.status, 403);
    assert_eq!(
        a.kind(),
        ("permission_error", "model_not_allowed", Some("model"))
    );
    assert!(a.message().contains("'smart'"), "{}", a.message());
    assert!(a.headers.is_empty(), "{:?}", a.headers);
    flow.on_log(&mut r.host);
    let log = r.log();
    assert_eq!(
        (
            log["status"].as_u64(),
            log["error"].as_str(),
            log["client"].as_str()
        ),
        (Some(403), Some("model_not_allowed"), Some("team-a"))
    );
    // An unknown model is checked by name first: 403, not 404.
    let (_, a) = r.refused(keyed("sk-team-a", &model("nope")));
    assert_eq!(a.status, 403);
    // Allowed by the glob but routed by nothing: 404.
    let (_, a) = r.refused(keyed("sk-team-a", &model("gpt-4o-mini-2024")));
    assert_eq!((a.status, a.kind().1), (404, "model_not_found"));
    // Allowed exactly.
    r.routed(keyed("sk-team-a", &model("fast")));
    assert_eq!(destination(&r.host), dest("openai-cluster", "gpt-4o-mini"));
    assert_eq!(r.stat("team-a", "forbidden"), 2);
    assert_eq!(r.stat("team-a", "requests"), 1);
}

#[test]
fn auto_with_no_allowed_target_gets_403() {
    let mut r = Router::new(clients_plan());
    for key in ["sk-nothing", "sk-team-a"] {
        let (_, a) = r.refused(keyed(key, &auto()));
        assert_eq!(a.status, 403, "{key}");
        assert_eq!(
            a.kind(),
            ("permission_error", "model_not_allowed", Some("model"))
        );
    }
    // No model at all is `auto` as well.
    let (_, a) = r.refused(keyed("sk-nothing", &format!("{{{PROMPT_14}}}")));
    assert_eq!(a.status, 403);
    assert_eq!(r.stat("nothing", "forbidden"), 2);
}

#[test]
fn auto_keeps_to_the_allowed_targets() {
    let mut r = Router::new(clients_plan());
    // `mixed` takes openai's gpt-4.1 first; local-only may only use `local/*`.
    r.routed(keyed("sk-team-c", &auto()));
    assert_eq!(destination(&r.host), dest("openai-cluster", "gpt-4.1"));
    r.routed(keyed("sk-local", &auto()));
    assert_eq!(destination(&r.host), dest("vllm", "qwen2.5-7b"));
    // By name the alias is not allowed, though its second target would be.
    let (_, a) = r.refused(keyed("sk-local", &model("mixed")));
    assert_eq!(a.status, 403);
}

#[test]
fn body_errors_come_before_403_and_refusals_do_not_count() {
    let mut r = Router::new(clients_plan());
    // 401 at the headers, whatever the body.
    let (_, a) = r.refused(anonymous("{not json"));
    assert_eq!(a.status, 401);
    // 400 before 403.
    let (_, a) = r.refused(keyed("sk-team-a", "{not json"));
    assert_eq!((a.status, a.kind().1), (400, "invalid_json"));
    let (_, a) = r.refused(keyed(
        "sk-team-a",
        r#"{"model":"smart","provider":{"sort":1}}"#,
    ));
    assert_eq!(a.status, 400);
    // None of these, nor 403 and 404, count against rpm 1.
    for _ in 0..3 {
        let (_, a) = r.refused(keyed("sk-team-e", "[]"));
        assert_eq!(a.status, 400);
        let (_, a) = r.refused(keyed("sk-team-e", &model("nope")));
        assert_eq!(a.status, 404);
    }
    assert_eq!(
        r.ledger("team-e")
            .window
            .totals(T0 + 1_000, 10_000)
            .requests,
        0
    );
    r.routed(keyed("sk-team-e", &model("smart")));
    let (_, a) = r.refused(keyed("sk-team-e", &model("smart")));
    assert_eq!(a.status, 429);
    // 404 still before 429.
    let (_, a) = r.refused(keyed("sk-team-e", &model("nope")));
    assert_eq!(a.status, 404);
    assert_eq!(r.stat("team-e", "requests"), 1);
    assert_eq!(r.stat("team-e", "rate_limited"), 1);
}

// ---------------------------------------------------------------------------------------
// 429 and x-ratelimit-*
// ---------------------------------------------------------------------------------------

#[test]
fn over_rpm_gets_429_with_retry_after_and_rate_limit_headers() {
    let mut r = Router::new(clients_plan());
    r.at(T0 + 1_000);
    r.routed(keyed("sk-team-a", &model("fast")));
    r.at(T0 + 11_000);
    r.routed(keyed("sk-team-a", &model("fast")));
    r.at(T0 + 21_000);
    let (mut flow, a) = r.refused(keyed("sk-team-a", &model("fast")));
    assert_eq!(a.status, 429);
    assert_eq!(a.kind(), ("requests", "rate_limit_exceeded", None));
    assert!(a.message().contains("team-a"), "{}", a.message());
    assert!(!a.message().contains("sk-team-a"));
    // The first request's bucket [T0, T0+10 s) leaves the window at T0+60 s: in 39 s.
    assert_eq!(
        a.header_names(),
        [
            "retry-after",
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests"
        ]
    );
    assert_eq!(a.header("retry-after"), Some("39"));
    assert_eq!(a.header("x-ratelimit-limit-requests"), Some("2"));
    assert_eq!(a.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(a.header("x-ratelimit-reset-requests"), Some("39s"));
    flow.on_log(&mut r.host);
    assert_eq!(r.log()["error"], "rate_limit_exceeded");
    assert_eq!(r.stat("team-a", "rate_limited"), 1);

    // Just before the edge: still refused, told to wait a second.
    r.at(T0 + 59_999);
    let (_, a) = r.refused(keyed("sk-team-a", &model("fast")));
    assert_eq!(a.header("retry-after"), Some("1"));
    assert_eq!(a.header("x-ratelimit-reset-requests"), Some("1ms"));
    // At the edge the first request is gone.
    r.at(T0 + 60_000);
    r.routed(keyed("sk-team-a", &model("fast")));
    let (_, a) = r.refused(keyed("sk-team-a", &model("fast")));
    assert_eq!(a.header("retry-after"), Some("10"));
    assert_eq!(a.header("x-ratelimit-reset-requests"), Some("10s"));
    assert_eq!(r.stat("team-a", "requests"), 3);
    assert_eq!(r.stat("team-a", "rate_limited"), 3);
}

#[test]
fn routed_responses_carry_the_clients_rate_limits_instead_of_the_providers() {
    let provider = [
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-reset-requests", "6ms"),
        ("x-ratelimit-limit-tokens", "30000000"),
        ("x-ratelimit-remaining-tokens", "29999000"),
        ("x-ratelimit-reset-tokens", "2ms"),
    ];
    let mut r = Router::new(clients_plan());
    r.at(T0 + 5_000);
    let mut flow = r.routed(keyed("sk-team-a", &model("fast")));
    r.respond(&mut flow, &provider);
    let h = |r: &Router, name: &str| r.host.response_header(name).map(str::to_owned);
    assert_eq!(h(&r, "x-ratelimit-limit-requests").as_deref(), Some("2"));
    assert_eq!(
        h(&r, "x-ratelimit-remaining-requests").as_deref(),
        Some("1")
    );
    assert_eq!(h(&r, "x-ratelimit-reset-requests").as_deref(), Some("55s"));
    // team-a has no tpm: the provider's token figures describe the router's key, not its.
    for name in [
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ] {
        assert_eq!(h(&r, name), None, "{name}");
    }
    r.end(&mut flow, None);

    // Both limits: all six are the client's.
    let mut flow = r.routed(keyed("sk-team-f", &model("smart")));
    r.respond(&mut flow, &provider);
    let ours: Vec<Option<String>> = provider.iter().map(|(k, _)| h(&r, k)).collect();
    let expected = ["5", "4", "55s", "1000", "986", "55s"];
    assert_eq!(
        ours,
        expected.map(|v| Some(v.to_owned())).to_vec(),
        "estimate 14 tokens"
    );
    r.end(&mut flow, None);

    // A client without rpm or tpm leaves the provider's alone, a budget alone too.
    for key in ["sk-team-b", "sk-team-d"] {
        let mut flow = r.routed(keyed(key, &model("smart")));
        r.respond(&mut flow, &provider);
        for (k, v) in provider {
            assert_eq!(h(&r, k).as_deref(), Some(v), "{key}: {k}");
        }
        r.end(&mut flow, None);
    }
}

#[test]
fn rate_limits_are_stamped_even_without_diagnostic_headers() {
    let mut config = clients_config();
    config["response_headers"] = json!(false);
    let mut r = Router::new(plan_json(&config));
    let mut flow = r.routed(keyed("sk-team-a", &model("fast")));
    r.respond(&mut flow, &[("x-ratelimit-limit-tokens", "30000000")]);
    assert_eq!(
        r.host.response_header("x-ratelimit-limit-requests"),
        Some("2")
    );
    assert_eq!(
        r.host.response_header("x-ratelimit-remaining-requests"),
        Some("1")
    );
    assert_eq!(r.host.response_header("x-ratelimit-limit-tokens"), None);
    assert!(no_router_headers(&r.host));
}

#[test]
fn tpm_counts_the_estimate_then_settles_the_reported_usage() {
    let mut r = Router::new(clients_plan());
    let now = T0 + 1_000;
    r.at(now);
    let mut flow = r.routed(keyed("sk-team-c", &model("smart")));
    let tokens = |r: &Router| r.ledger("team-c").window.totals(now, 10_000).tokens;
    assert_eq!(tokens(&r), 14, "the prompt estimate at admission");
    r.respond(&mut flow, &[]);
    assert_eq!(
        r.host.response_header("x-ratelimit-limit-tokens"),
        Some("100")
    );
    assert_eq!(
        r.host.response_header("x-ratelimit-remaining-tokens"),
        Some("86")
    );
    assert_eq!(
        r.host.response_header("x-ratelimit-reset-tokens"),
        Some("59s")
    );
    assert_eq!(r.host.response_header("x-ratelimit-limit-requests"), None);
    r.end(
        &mut flow,
        Some(r#"{"prompt_tokens":20,"completion_tokens":70,"total_tokens":90}"#),
    );
    assert_eq!(tokens(&r), 90, "the reported total replaces the estimate");
    assert_eq!(r.stat("team-c", "prompt_tokens"), 20);
    assert_eq!(r.stat("team-c", "completion_tokens"), 70);
    assert_eq!(r.ledger("team-c").window.totals(now, 10_000).requests, 1);

    // 90 < 100: one more fits; it reports less than its estimate (no refund).
    let mut flow = r.routed(keyed("sk-team-c", &model("smart")));
    r.respond(&mut flow, &[]);
    assert_eq!(
        r.host.response_header("x-ratelimit-remaining-tokens"),
        Some("0")
    );
    r.end(
        &mut flow,
        Some(r#"{"prompt_tokens":5,"completion_tokens":5}"#),
    );
    assert_eq!(tokens(&r), 104);

    let (_, a) = r.refused(keyed("sk-team-c", &model("smart")));
    assert_eq!(a.status, 429);
    assert_eq!(a.kind(), ("tokens", "rate_limit_exceeded", None));
    assert_eq!(a.header("retry-after"), Some("59"));
    assert_eq!(a.header("x-ratelimit-limit-tokens"), Some("100"));
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), Some("0"));
    assert_eq!(a.header("x-ratelimit-reset-tokens"), Some("59s"));
    assert_eq!(a.header("x-ratelimit-limit-requests"), None);
    assert_eq!(r.stat("team-c", "rate_limited"), 1);
    // A minute later the window is empty.
    r.at(T0 + 60_000);
    r.routed(keyed("sk-team-c", &model("smart")));
}

#[test]
fn a_spent_monthly_budget_gets_429_until_next_month() {
    let mut r = Router::new(clients_plan());
    r.at(NOV_2026);
    // Unpriced targets cost nothing.
    for _ in 0..3 {
        let mut flow = r.routed(keyed("sk-team-d", &model("smart")));
        r.complete(
            &mut flow,
            Some(r#"{"prompt_tokens":100000,"completion_tokens":100000}"#),
            &[],
        );
    }
    assert_eq!(r.ledger("team-d").spent_micro, 0);
    // `fast`: 1 per million input, 10 per million output: 1000 + 100 × 10 = 2000 millionths,
    // twice the budget of 0.001.
    let mut flow = r.routed(keyed("sk-team-d", &model("fast")));
    r.complete(
        &mut flow,
        Some(r#"{"prompt_tokens":1000,"completion_tokens":100}"#),
        &[],
    );
    let ledger = r.ledger("team-d");
    assert_eq!((ledger.month, ledger.spent_micro), (682, 2_000));
    assert_eq!(r.stat("team-d", "cost_micro"), 2_000);
    assert_eq!(r.log()["client"], "team-d");

    r.at(NOV_2026 + 1_000);
    let (_, a) = r.refused(keyed("sk-team-d", &model("smart")));
    assert_eq!(a.status, 429);
    assert_eq!(a.kind(), ("insufficient_quota", "insufficient_quota", None));
    // Until 2026-12-01T00:00:00Z, rounded up to whole seconds.
    let wait = (DEC_2026 - (NOV_2026 + 1_000)).div_ceil(1000);
    assert_eq!(a.header("retry-after"), Some(wait.to_string().as_str()));
    assert_eq!(a.header_names(), ["retry-after"], "no per-minute limits");
    assert_eq!(r.stat("team-d", "rate_limited"), 1);
    r.at(DEC_2026 - 1);
    let (_, a) = r.refused(keyed("sk-team-d", &model("smart")));
    assert_eq!(a.header("retry-after"), Some("1"));
    // A new month.
    r.at(DEC_2026);
    let mut flow = r.routed(keyed("sk-team-d", &model("smart")));
    r.complete(&mut flow, None, &[]);
    let ledger = r.ledger("team-d");
    assert_eq!((ledger.month, ledger.spent_micro), (683, 0));
}

#[test]
fn an_unusable_ledger_lets_requests_through() {
    let mut r = Router::new(clients_plan());
    r.host.shared_data_fails = true;
    for _ in 0..4 {
        let mut flow = r.routed(keyed("sk-team-a", &model("fast")));
        r.complete(
            &mut flow,
            Some(r#"{"prompt_tokens":1,"completion_tokens":1}"#),
            &[("x-ratelimit-limit-requests", "10000")],
        );
    }
    assert_eq!(r.stat("team-a", "requests"), 4);
    assert_eq!(r.stat("team-a", "rate_limited"), 0);
    // Routed without the client's figures: none to stamp.
    assert_eq!(
        r.host.response_header("x-ratelimit-limit-requests"),
        Some("10000")
    );
    // Settling fails quietly too.
    for key in ["sk-team-c", "sk-team-d"] {
        let mut flow = r.routed(keyed(key, &model("fast")));
        r.complete(
            &mut flow,
            Some(r#"{"prompt_tokens":500,"completion_tokens":500}"#),
            &[],
        );
    }
    assert!(r.host.shared.is_empty());
}

// ---------------------------------------------------------------------------------------
// Profiles and client rules
// ---------------------------------------------------------------------------------------

#[test]
fn a_profile_is_the_clients_default_strategy() {
    let mut r = Router::new(clients_plan());
    // `mixed` is priority: gpt-4.1 first; team-b's profile is cheapest.
    r.routed(keyed("sk-team-c", &auto()));
    assert_eq!(destination(&r.host), dest("openai-cluster", "gpt-4.1"));
    r.routed(keyed("sk-team-b", &auto()));
    assert_eq!(destination(&r.host), dest("vllm", "qwen2.5-7b"));
    r.routed(keyed("sk-team-b", &model("mixed")));
    assert_eq!(destination(&r.host), dest("vllm", "qwen2.5-7b"));
    // `thrifty` is cheapest; team-q's profile (quality) is priority.
    r.routed(keyed("sk-team-c", &model("thrifty")));
    assert_eq!(destination(&r.host), dest("vllm", "qwen2.5-7b"));
    r.routed(keyed("sk-team-q", &model("thrifty")));
    assert_eq!(destination(&r.host), dest("openai-cluster", "gpt-4.1"));
    // The request's own `provider.sort` wins over the profile.
    let body = format!(r#"{{"model":"thrifty","provider":{{"sort":"price"}},{PROMPT_14}}}"#);
    r.routed(keyed("sk-team-q", &body));
    assert_eq!(destination(&r.host), dest("vllm", "qwen2.5-7b"));
    assert!(
        !body_str(&r.host).contains("provider"),
        "router fields removed"
    );
}

fn rules_config(required: bool) -> Plan {
    let mut config = clients_config();
    config["clients"]["required"] = json!(required);
    config["rules"] = json!([
        {"name": "for-b", "match": {"clients": ["team-b*"]}, "use_model": "smart"},
        {"name": "quality-folk", "match": {"profile": ["quality", "latency"]}, "use_model": "fast"}
    ]);
    plan_json(&config)
}

#[test]
fn rules_match_client_names_and_profiles() {
    let mut r = Router::new(rules_config(false));
    let rule_of = |r: &mut Router, req: MockHost| {
        let mut flow = r.routed(req);
        r.respond(&mut flow, &[]);
        let rule = r
            .host
            .response_header(HEADER_RULE)
            .unwrap_or_default()
            .to_owned();
        r.end(&mut flow, None);
        (rule, destination(&r.host).1)
    };
    assert_eq!(
        rule_of(&mut r, keyed("sk-team-b", &auto())),
        ("rule:for-b".to_owned(), "gpt-4o".to_owned())
    );
    assert_eq!(r.log()["rule"], "rule:for-b");
    assert_eq!(
        rule_of(&mut r, keyed("sk-team-q", &auto())),
        ("rule:quality-folk".to_owned(), "gpt-4o-mini".to_owned())
    );
    // A client with neither, an unknown key and no key: the default.
    for req in [
        keyed("sk-team-c", &auto()),
        keyed("sk-who", &auto()),
        anonymous(&auto()),
    ] {
        assert_eq!(rule_of(&mut r, req).0, "default");
    }
    // The rule's targets are still held to the client's models for `auto`.
    let mut config = clients_config();
    config["rules"] =
        json!([{"name": "a", "match": {"clients": ["team-a"]}, "use_model": "smart"}]);
    let mut r = Router::new(plan_json(&config));
    let (_, a) = r.refused(keyed("sk-team-a", &auto()));
    assert_eq!(a.status, 403);
}

// ---------------------------------------------------------------------------------------
// The access log and stats
// ---------------------------------------------------------------------------------------

#[test]
fn the_log_names_a_known_client_and_never_its_key() {
    let mut r = Router::new(clients_plan());
    r.at(NOV_2026);
    let mut flow = r.routed(keyed("sk-team-a", &model("fast")));
    r.complete(
        &mut flow,
        Some(r#"{"prompt_tokens":1000,"completion_tokens":100}"#),
        &[],
    );
    let log = r.log();
    assert_eq!(log["client"], "team-a");
    assert!(log["client_key_id"].is_null(), "{log}");
    assert_eq!(log["status"], 200);
    let text = r.log_text();
    for secret in [
        "sk-team-a".to_owned(),
        key_id("sk-team-a"),
        sha256_hex(b"sk-team-a"),
        "decoy".to_owned(),
    ] {
        assert!(!text.contains(&secret), "{secret} in {text}");
    }
}

#[test]
fn client_stats_count_requests_refusals_tokens_and_cost() {
    let mut r = Router::new(clients_plan());
    r.at(NOV_2026);
    for stat in [
        "requests",
        "rate_limited",
        "forbidden",
        "prompt_tokens",
        "completion_tokens",
        "cost_micro",
    ] {
        assert_eq!(r.stat("team-a", stat), 0, "{stat} is defined");
    }
    for _ in 0..2 {
        let mut flow = r.routed(keyed("sk-team-a", &model("fast")));
        r.complete(
            &mut flow,
            Some(r#"{"prompt_tokens":1000,"completion_tokens":100}"#),
            &[],
        );
    }
    r.refused(keyed("sk-team-a", &model("fast")));
    r.refused(keyed("sk-team-a", &model("smart")));
    r.refused(keyed("sk-nobody", &model("fast")));
    r.refused(anonymous(&model("fast")));
    assert_eq!(r.stat("team-a", "requests"), 2);
    assert_eq!(r.stat("team-a", "rate_limited"), 1);
    assert_eq!(r.stat("team-a", "forbidden"), 1);
    assert_eq!(r.stat("team-a", "prompt_tokens"), 2_000);
    assert_eq!(r.stat("team-a", "completion_tokens"), 200);
    // Counted without a budget too: 2 × 2000 millionths.
    assert_eq!(r.stat("team-a", "cost_micro"), 4_000);
    assert_eq!(
        r.flushed().metric("llm_router.clients.unauthorized"),
        Some(2)
    );
    // Other clients are untouched.
    assert_eq!(r.stat("team-b", "requests"), 0);
    // No stat name holds a key or its hash.
    let hash = sha256_hex(b"sk-team-a");
    assert!(r
        .host
        .metrics
        .iter()
        .all(|(_, n)| !n.contains("sk-") && !n.contains(&hash[..16])));
}
