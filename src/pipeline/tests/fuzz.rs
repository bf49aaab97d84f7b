//! A seeded, bounded fuzz harness of both flows over `MockHost` (stable Rust, no fuzzing
//! engine): random and mutated header bytes, structure-aware mutations of JSON bodies,
//! random SSE and body chunkings, random plugin configurations. Each case asserts that
//! nothing panics, that a routed body is valid JSON differing from the client's only in the
//! members the router changes, that the client's credential never reaches an upstream of a
//! routed request (nor any request when `clients` is configured), and that every local reply
//! is an OpenAI-shaped error or a `/v1/models` list.
//!
//! `cargo test fuzz` runs `FUZZ_CASES` cases (default 2,000) from `FUZZ_SEED` (default
//! fixed); `make fuzz` runs many more. A failing case prints its seed.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::*;

use crate::metrics::Metrics;
use crate::pipeline::attempt::{self, AttemptFlow};
use crate::route::prefs::ROUTER_FIELDS;
use crate::sha256::sha256_hex;

const SECRET: &str = "sk-fuzz-client-secret";

/// xorshift64*: small, deterministic, good enough to pick cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn env_var(var: u64) -> usize {
    std::env::var(if var == 0 { "FUZZ_CASES" } else { "FUZZ_SEED" })
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if var == 0 { 2_000 } else { 0x5eed })
}

// ---------------------------------------------------------------------------------------
// Configurations
// ---------------------------------------------------------------------------------------

fn base_configs() -> Vec<Value> {
    let bundled: Value = serde_json::from_str(BUNDLED).expect("bundled config is JSON");
    let mut with_clients = test_config();
    with_clients["clients"] = json!({
        "identity_header": "x-client-name",
        "keys": [
            {"name": "team-a", "key_sha256": sha256_hex(SECRET.as_bytes()), "models": ["gpt-4o", "claude"],
             "rpm": 50, "tpm": 100000, "monthly_budget": 5},
            {"name": "team-b", "key_sha256": sha256_hex(b"sk-other"), "profile": "cheapest"}
        ]
    });
    let mut health = test_config();
    health["health"] = json!({"enabled": true});
    health["usage"] = json!({"include_stream_usage": true, "cost_header": true});
    let mut failover = test_config();
    failover["failover"] = json!({"cluster": "llm_failover", "max_attempts": 3});
    failover["models"]["pair"] = json!({"targets": [
        {"upstream": "openai", "model": "gpt-4o", "price": {"input": 1, "output": 2}},
        {"upstream": "local", "model": "qwen2.5-7b"}]});
    failover["default"] = json!({"use_model": "pair"});
    failover["health"] = json!({"enabled": true});
    vec![bundled, test_config(), with_clients, health, failover]
}

/// Random scalars and shapes to put where a configuration has values.
fn odd_value(rng: &mut Rng) -> Value {
    match rng.below(9) {
        0 => Value::Null,
        1 => json!(-1),
        2 => json!(1e308),
        3 => json!(""),
        4 => json!("\u{0}\r\n"),
        5 => json!([]),
        6 => json!({}),
        7 => json!(true),
        _ => json!("x".repeat(rng.below(300))),
    }
}

/// Replaces one value somewhere in `v` (a random path) with an odd one, or drops a member.
fn mutate_value(rng: &mut Rng, v: &mut Value, depth: usize) {
    let stop = depth > 6 || rng.chance(25);
    match v {
        Value::Object(map) if !map.is_empty() && !stop => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = rng.pick(&keys).clone();
            if rng.chance(10) {
                map.remove(&key);
            } else if let Some(child) = map.get_mut(&key) {
                mutate_value(rng, child, depth + 1);
            }
        }
        Value::Array(items) if !items.is_empty() && !stop => {
            let i = rng.below(items.len());
            mutate_value(rng, &mut items[i], depth + 1);
        }
        _ => *v = odd_value(rng),
    }
}

fn compile_random(rng: &mut Rng, bases: &[Value]) -> Option<Plan> {
    let mut config = rng.pick(bases).clone();
    if rng.chance(20) {
        for _ in 0..=rng.below(3) {
            mutate_value(rng, &mut config, 0);
        }
    }
    let env = |name: &str| (name != "MISSING_KEY").then(|| format!("key-{name}"));
    match compile(config.to_string().as_bytes(), &env) {
        Ok(plan) => Some(plan),
        Err(e) => {
            // A refused configuration names what is wrong.
            assert!(!e.to_string().is_empty());
            None
        }
    }
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

const PATHS: [&str; 16] = [
    "/v1/chat/completions",
    "/v1/chat/completions",
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/models",
    "/v1/models/gpt-4o",
    "/v1/files",
    "//v1/chat/completions",
    "/v1/chat/completions?x=1",
    "/V1/chat/%2e%2e/chat/completions",
    "/v1/chat%2Fcompletions",
];

fn seed_bodies() -> Vec<Value> {
    vec![
        json!({"model": "auto", "messages": [{"role": "user", "content": "write a python function"}]}),
        json!({"model": "gpt-4o", "stream": true, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "what is in this image"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}),
        json!({"model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}],
               "provider": {"sort": "price", "allow_fallbacks": false}, "allowed_models": ["gpt-4o"]}),
        json!({"model": "pair", "prompt": "1+1=", "stream": true, "stream_options": {"include_usage": false}}),
        json!({"model": "local", "input": ["embed me", "and me"]}),
        json!({"model": "budget", "input": "a responses request", "max_output_tokens": 5}),
    ]
}

/// A body: a seed, mutated as JSON (values, types, depth), then maybe as bytes.
fn random_body(rng: &mut Rng, seeds: &[Value]) -> Vec<u8> {
    let mut v = rng.pick(seeds).clone();
    if rng.chance(50) {
        for _ in 0..=rng.below(3) {
            mutate_value(rng, &mut v, 0);
        }
    }
    let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
    match rng.below(20) {
        0 => bytes.truncate(rng.below(bytes.len() + 1)),
        1 => {
            for _ in 0..=rng.below(4) {
                let i = rng.below(bytes.len());
                if let Some(b) = bytes.get_mut(i) {
                    *b = rng.next() as u8;
                }
            }
        }
        2 => bytes = rng.bytes(64),
        3 => {
            // Deep nesting and duplicate keys.
            let depth = rng.below(200);
            let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            bytes =
                format!(r#"{{"model":"auto","model":"gpt-4o","messages":{nested}}}"#).into_bytes();
        }
        _ => {}
    }
    bytes
}

/// A header value: ordinary, or odd bytes (not UTF-8, controls, huge).
fn header_bytes(rng: &mut Rng, ordinary: &str) -> Vec<u8> {
    match rng.below(24) {
        0 => rng.bytes(40),
        1 => b"\xff\xfe\xc3\x28\xed\xa0\x80".to_vec(),
        2 => vec![b'a'; rng.below(10_000)],
        _ => ordinary.as_bytes().to_vec(),
    }
}

fn random_request(rng: &mut Rng, seeds: &[Value]) -> MockHost {
    let body = random_body(rng, seeds);
    let method = *rng.pick(&["POST", "POST", "POST", "POST", "POST", "GET", "HEAD", "PUT"]);
    let mut host = MockHost::with_request(&[(":method", method)], &body);
    let len = match rng.below(12) {
        0 => "x".to_owned(),
        1 => (body.len() + 1).to_string(),
        _ => body.len().to_string(),
    };
    let bearer = format!("Bearer {SECRET}");
    let mut candidates: Vec<(&str, String)> = vec![
        (":path", (*rng.pick(&PATHS)).to_owned()),
        (":authority", "router.local".to_owned()),
        ("content-type", "application/json".to_owned()),
        ("content-length", len),
        ("authorization", bearer),
        ("x-api-key", SECRET.to_owned()),
        ("x-team", "research".to_owned()),
        ("x-client-name", "team-a".to_owned()),
        ("content-encoding", "identity".to_owned()),
        ("x-llm-router-cluster", "attacker".to_owned()),
        (attempt::HEADER_FAILOVER, "1;openai/gpt-4o".to_owned()),
        ("x-envoy-max-retries", "100".to_owned()),
        ("user-agent", "sdk/1.0".to_owned()),
    ];
    // Keep the credential in most cases so that the check below has something to find.
    candidates.retain(|(k, _)| k.starts_with(':') || k.contains("auth") || rng.chance(60));
    for (name, ordinary) in candidates {
        let value = header_bytes(rng, &ordinary);
        host.raw_request_headers.push((name.to_owned(), value));
    }
    for _ in 0..rng.below(3) {
        let name = String::from_utf8_lossy(&rng.bytes(12)).to_ascii_lowercase();
        let value = rng.bytes(30);
        host.raw_request_headers.push((name, value));
    }
    host
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

fn random_response(rng: &mut Rng) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
    let status = rng
        .pick(&["200", "200", "429", "500", "503", "x", ""])
        .to_string();
    let stream = rng.chance(50);
    let content_type = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    let mut headers = vec![
        (":status".to_owned(), status.into_bytes()),
        ("content-type".to_owned(), header_bytes(rng, content_type)),
    ];
    for name in ["retry-after", "x-ratelimit-remaining-requests", "x-odd"] {
        if rng.chance(40) {
            headers.push((name.to_owned(), header_bytes(rng, "3")));
        }
    }
    let mut body = if stream {
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3}}"#;
        let mut s = String::new();
        for i in 0..rng.below(6) {
            s.push_str(&format!(
                "data: {{\"choices\":[{{\"delta\":{{\"content\":\"t{i}\"}}}}]}}\r\n\r\n"
            ));
        }
        s.push_str(&format!(
            "event: message_delta\ndata: {usage}\n\n: comment\n\ndata: [DONE]\n\n"
        ));
        s.into_bytes()
    } else {
        br#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":9,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":2}}}"#.to_vec()
    };
    if rng.chance(20) {
        let i = rng.below(body.len());
        body[i] = rng.next() as u8;
    }
    if rng.chance(5) {
        body = rng.bytes(200);
    }
    (headers, body)
}

/// Feeds `body` to a flow in random chunks; the mock's current chunk is what the flow sees.
fn feed_response(rng: &mut Rng, flow: &mut dyn StreamFlow, host: &mut MockHost, body: &[u8]) {
    let mut at = 0;
    loop {
        let n = if rng.chance(30) {
            body.len()
        } else {
            rng.below(12) + 1
        };
        let end = (at + n).min(body.len());
        host.response_body = body[at..end].to_vec();
        let last = end == body.len();
        let len = host.response_body.len();
        flow.on_response_body(host, len, last);
        at = end;
        if last {
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Invariants
// ---------------------------------------------------------------------------------------

/// Every local reply is an error in its client's shape (Anthropic's for `/v1/messages`,
/// else OpenAI's) or a `/v1/models` answer.
fn check_reply(host: &MockHost) {
    let Some(r) = &host.local_reply else { return };
    let v: Value = serde_json::from_slice(&r.body).expect("a local reply is JSON");
    if r.status == 200 {
        assert!(v.get("data").is_some() || v.get("id").is_some(), "{v}");
        return;
    }
    if v.get("type") == Some(&Value::from("error")) {
        let err = v["error"].as_object().expect("an `error` object");
        assert!(err["type"].is_string() && err["message"].is_string(), "{v}");
        assert!(!r.body.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
        return;
    }
    let err = v["error"].as_object().expect("an `error` object");
    for key in ["message", "type", "code"] {
        assert!(err[key].is_string(), "{key} in {v}");
    }
    assert!(err["param"].is_null() || err["param"].is_string(), "{v}");
    assert!(
        err["message"].as_str().is_some_and(|m| m.len() < 4096),
        "{v}"
    );
    assert!(!r.body.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
}

fn carries_secret(host: &MockHost) -> bool {
    let text = host.request_headers.iter().map(|(_, v)| v.as_bytes());
    let raw = host.raw_request_headers.iter().map(|(_, v)| v.as_slice());
    text.chain(raw)
        .any(|v| v.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()))
}

/// The routed body differs from the client's only in `model`, `stream_options` and the
/// router-only members.
fn check_routed_body(client: &[u8], upstream: &[u8]) {
    let sent: Value = serde_json::from_slice(upstream).expect("the routed body is JSON");
    let asked: Value = serde_json::from_slice(client).expect("a routed client body was JSON");
    let (Some(sent), Some(asked)) = (sent.as_object(), asked.as_object()) else {
        panic!("routed bodies are objects");
    };
    let changed = |k: &str| k == "model" || k == "stream_options" || ROUTER_FIELDS.contains(&k);
    for (k, v) in asked {
        if !changed(k) {
            assert_eq!(sent.get(k), Some(v), "member {k} changed");
        }
    }
    for k in sent.keys() {
        assert!(asked.contains_key(k) || changed(k), "member {k} added");
    }
    for k in ROUTER_FIELDS {
        assert!(!sent.contains_key(k), "{k} reached the upstream");
    }
}

/// What became of a case: refused configuration, local reply, passed through, routed.
#[derive(Clone, Copy)]
enum Outcome {
    BadConfig = 0,
    Replied = 1,
    Passed = 2,
    Routed = 3,
}

fn one_case(seed: u64, bases: &[Value], seeds: &[Value]) -> Outcome {
    let mut rng = Rng(seed | 1);
    let Some(plan) = compile_random(&mut rng, bases) else {
        return Outcome::BadConfig;
    };
    let plan = Rc::new(plan);
    let keyed = plan.clients.is_some();
    let mut host = random_request(&mut rng, seeds);
    host.now_nanos = 1_700_000_000_000_000_000 + rng.next() % 1_000_000_000_000;
    let metrics = Rc::new(Metrics::define(&plan, &mut host));
    let mut flow = RequestFlow::new(Rc::clone(&plan), rng.next()).with_metrics(metrics.clone());
    let client_body = host.request_body.clone();
    let mut go_on = flow.on_request_headers(&mut host, rng.chance(5)) == Flow::Pause
        && host.local_reply.is_none();
    if go_on {
        // The body in one or two callbacks.
        let len = host.request_body.len();
        if len > 1 && rng.chance(30) {
            flow.on_request_body(&mut host, len / 2, false);
        }
        go_on = flow.on_request_body(&mut host, len, true) == Flow::Continue;
    }
    check_reply(&host);
    let routed = host.local_reply.is_none() && host.header("x-llm-router-cluster").is_some();
    // Answered locally, a request goes nowhere; otherwise it reaches an upstream.
    if host.local_reply.is_none() && (keyed || routed) {
        assert!(
            !carries_secret(&host),
            "the client's key reached the upstream"
        );
    }
    if routed && go_on {
        check_routed_body(&client_body, &host.request_body);
    }
    // A failover attempt through the attempt filter, from the headers the flow left.
    if routed && host.header(attempt::HEADER_FAILOVER).is_some() {
        let mut hop = MockHost {
            request_headers: host.request_headers.clone(),
            request_body: host.request_body.clone(),
            now_nanos: host.now_nanos,
            ..MockHost::default()
        };
        let count = rng.pick(&["1", "2", "3", "9", "x"]).to_string();
        hop.request_headers
            .push(("x-envoy-attempt-count".to_owned(), count));
        let mut attempt = AttemptFlow::new(Rc::clone(&plan)).with_metrics(metrics.clone());
        attempt.on_request_headers(&mut hop, false);
        let len = hop.request_body.len();
        attempt.on_request_body(&mut hop, len, true);
        assert!(!carries_secret(&hop));
        let (headers, body) = random_response(&mut rng);
        hop.raw_response_headers = headers;
        attempt.on_response_headers(&mut hop, false);
        feed_response(&mut rng, &mut attempt, &mut hop, &body);
        attempt.on_log(&mut hop);
    }
    if host.local_reply.is_none() {
        let (headers, body) = random_response(&mut rng);
        host.headers_sent = true;
        host.raw_response_headers = headers;
        flow.on_response_headers(&mut host, rng.chance(5));
        if !rng.chance(10) {
            feed_response(&mut rng, &mut flow, &mut host, &body);
        }
    }
    flow.on_log(&mut host);
    flow.on_log(&mut host);
    match (host.local_reply.is_some(), routed) {
        (true, _) => Outcome::Replied,
        (false, true) => Outcome::Routed,
        (false, false) => Outcome::Passed,
    }
}

#[test]
fn fuzz_request_and_response_flows() {
    let cases = env_var(0);
    let seed = env_var(1) as u64;
    let bases = base_configs();
    let seeds = seed_bodies();
    // Quiet the default hook: a failing case is reported once, with its seed.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failure = None;
    let mut outcomes = [0usize; 4];
    for i in 0..cases as u64 {
        let case_seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(i);
        match catch_unwind(AssertUnwindSafe(|| one_case(case_seed, &bases, &seeds))) {
            Ok(outcome) => outcomes[outcome as usize] += 1,
            Err(e) => {
                let message = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failure = Some((i, case_seed, message));
                break;
            }
        }
    }
    std::panic::set_hook(hook);
    if let Some((i, case_seed, message)) = failure {
        panic!("fuzz case {i} (case seed {case_seed:#x}) failed: {message}");
    }
    let [bad, replied, passed, routed] = outcomes;
    eprintln!(
        "fuzz: {cases} cases from seed {seed:#x} passed: {routed} routed, {replied} answered \
         locally, {passed} passed through, {bad} configurations refused"
    );
    // The mix must exercise every branch, or the harness tests little.
    assert!(routed * 20 >= cases && replied * 10 >= cases && passed * 20 >= cases);
}
