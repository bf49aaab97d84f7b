//! Native tests of client identification, model globs, the ledger's window and month
//! arithmetic, its encoding and its compare-and-swap updates.

use super::*;

use serde_json::{json, Value};

use super::ledger::{
    duration, rate_limit_headers, retry_after_seconds, Allowance, Exceeded, BUCKET_MS, ENCODED_LEN,
    KEY_PREFIX, VERSION, WINDOW_MS,
};
use crate::calendar::{month_index, month_start_ms};
use crate::host::mock::MockHost;
use crate::host::shared::{self, Record, SharedError};
use crate::host::{Host, HostResult, CAS_RETRIES};
use crate::sha256::sha256_hex;

/// SHA-256 of `abc` (FIPS 180-2, appendix B.1).
const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

/// 2025-01-01T00:00:00Z: on a bucket edge (a multiple of 10 s).
const T0: u64 = 1_735_689_600_000;

/// 2026-11-23T15:32:21.806Z, in month 682 (November 2026).
const NOV_2026: u64 = 1_795_447_941_806;
/// 2026-12-01T00:00:00Z.
const DEC_2026: u64 = 1_796_083_200_000;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn raw(v: Value) -> RawClients {
    serde_json::from_value(v).expect("a valid `clients` section")
}

fn clients(v: Value) -> ClientsPlan {
    match ClientsPlan::compile(&raw(v), "clients") {
        Ok(plan) => plan,
        Err(e) => panic!("clients do not compile: {e:?}"),
    }
}

/// The field a whole configuration with this `clients` section is refused for (the
/// section alone is refused for the same field).
fn refused_field(v: Value) -> String {
    let alone = ClientsPlan::compile(&raw(v.clone()), "clients")
        .map(|_| ())
        .expect_err("the section alone is refused");
    let field = config_field(&config(Some(v), None));
    assert_eq!(alone.field, field);
    field
}

/// A whole plugin configuration with `clients` (and `rules`, when given).
fn config(clients: Option<Value>, rules: Option<Value>) -> Value {
    let mut v = json!({
        "upstreams": {
            "openai": {"host": "api.openai.com", "headers": {"X-Extra": "1"},
                       "auth": {"type": "bearer", "key_env": "OPENAI_API_KEY"}}
        },
        "models": {"fast": {"targets": [{"upstream": "openai", "model": "gpt-4o-mini"}]}},
        "default": {"use_model": "fast"}
    });
    if let Some(c) = clients {
        v["clients"] = c;
    }
    if let Some(r) = rules {
        v["rules"] = r;
    }
    v
}

fn compile_config(v: &Value) -> Result<crate::config::plan::Plan, ConfigError> {
    let env = |name: &str| Some(format!("key-{name}"));
    crate::config::plan::compile(v.to_string().as_bytes(), &env)
}

/// The field a whole configuration is refused for.
fn config_field(v: &Value) -> String {
    match compile_config(v) {
        Ok(_) => panic!("expected a refusal of {v}"),
        Err(e) => e.field,
    }
}

fn key(name: &str, hash: &str) -> Value {
    json!({"name": name, "key_sha256": hash})
}

fn hash_of(key: &str) -> String {
    sha256_hex(key.as_bytes())
}

fn client_with_models(models: Option<&[&str]>) -> Client {
    Client {
        name: "c".to_owned(),
        models: models.map(|m| m.iter().map(|p| Glob::new(p)).collect()),
        limits: Limits::default(),
        profile: None,
        ledger_key: ledger::key("c"),
    }
}

fn rpm(n: u32) -> Limits {
    Limits {
        rpm: Some(n),
        ..Limits::default()
    }
}

fn tpm(n: u64) -> Limits {
    Limits {
        tpm: Some(n),
        ..Limits::default()
    }
}

fn budget(micro: u64) -> Limits {
    Limits {
        monthly_budget_micro: Some(micro),
        ..Limits::default()
    }
}

fn limited(r: Result<Quota, Limited>) -> Limited {
    match r {
        Ok(q) => panic!("expected a refusal, admitted with {q:?}"),
        Err(l) => l,
    }
}

fn requests_in(u: &ClientUsage, now: u64) -> u64 {
    u.window.totals(now, BUCKET_MS).requests
}

fn tokens_in(u: &ClientUsage, now: u64) -> u64 {
    u.window.totals(now, BUCKET_MS).tokens
}

// ---------------------------------------------------------------------------------------
// Keys and hashing
// ---------------------------------------------------------------------------------------

#[test]
fn a_key_is_found_by_its_sha256_in_either_case() {
    assert_eq!(hash_of("abc"), ABC_SHA256);
    for configured in [ABC_SHA256.to_owned(), ABC_SHA256.to_ascii_uppercase()] {
        let plan = clients(json!({"keys": [key("a", &configured)]}));
        assert_eq!(
            plan.identify(None, Some("abc")),
            Ok(Some(0)),
            "{configured}"
        );
        assert_eq!(plan.identify(None, Some("Bearer abc")), Ok(Some(0)));
    }
    // Mixed case too: hex digits are hex digits.
    let mixed: String = ABC_SHA256
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    let plan = clients(json!({"keys": [key("a", &mixed)]}));
    assert_eq!(plan.identify(None, Some("abc")), Ok(Some(0)));
}

#[test]
fn parse_sha256_reads_64_hex_digits_only() {
    let bytes = parse_sha256(ABC_SHA256).expect("valid");
    assert_eq!(bytes, crate::sha256::sha256(b"abc"));
    assert_eq!(parse_sha256(&ABC_SHA256.to_ascii_uppercase()), Some(bytes));
    assert_eq!(parse_sha256(&ABC_SHA256[..63]), None);
    assert_eq!(parse_sha256(&format!("{ABC_SHA256}0")), None);
    assert_eq!(parse_sha256(""), None);
    let bad = format!("g{}", &ABC_SHA256[1..]);
    assert_eq!(parse_sha256(&bad), None);
    // Signs and spaces are not hex digits, even where a number parser would take them.
    assert_eq!(parse_sha256(&format!("+{}", &ABC_SHA256[1..])), None);
    assert_eq!(parse_sha256(&format!(" {}", &ABC_SHA256[1..])), None);
    // 64 bytes but not 64 characters: a multi-byte character.
    assert_eq!(parse_sha256(&format!("é{}", &ABC_SHA256[2..])), None);
}

#[test]
fn bearer_scheme_and_spaces_are_stripped_in_any_case() {
    for value in [
        "abc",
        "  abc  ",
        "Bearer abc",
        "bearer abc",
        "BEARER abc",
        "bEaReR abc",
        "Bearer    abc",
        "  Bearer abc  ",
        "\tBearer abc\t",
    ] {
        assert_eq!(bare_credential(value), "abc", "{value:?}");
    }
    // Only the scheme is cut: a key that merely starts with "bearer" is kept whole.
    assert_eq!(bare_credential("bearerabc"), "bearerabc");
    assert_eq!(bare_credential("Basic abc"), "Basic abc");
    assert_eq!(bare_credential("Bearer"), "Bearer");
    assert_eq!(bare_credential(""), "");
    let plan = clients(json!({"keys": [key("a", ABC_SHA256)]}));
    for value in ["bearer abc", "BEARER  abc ", " abc"] {
        assert_eq!(plan.identify(None, Some(value)), Ok(Some(0)), "{value:?}");
    }
    // The hash is of the key's exact bytes: case inside the key matters.
    assert_eq!(
        plan.identify(None, Some("Bearer ABC")),
        Err(AuthError::Unknown)
    );
}

#[test]
fn credential_headers_are_looked_at_in_documented_order() {
    assert_eq!(
        CREDENTIAL_HEADERS,
        ["authorization", "x-api-key", "api-key"]
    );
}

// ---------------------------------------------------------------------------------------
// identify()
// ---------------------------------------------------------------------------------------

fn two_clients(required: Option<bool>, identity_header: Option<&str>) -> ClientsPlan {
    let mut v =
        json!({"keys": [key("team-a", &hash_of("key-a")), key("team-b", &hash_of("key-b"))]});
    if let Some(r) = required {
        v["required"] = json!(r);
    }
    if let Some(h) = identity_header {
        v["identity_header"] = json!(h);
    }
    clients(v)
}

#[test]
fn required_is_the_default_and_tells_missing_from_unknown() {
    let plan = two_clients(None, None);
    assert!(plan.required);
    assert_eq!(plan.identify(None, Some("Bearer key-a")), Ok(Some(0)));
    assert_eq!(plan.identify(None, Some("key-b")), Ok(Some(1)));
    assert_eq!(plan.identify(None, None), Err(AuthError::Missing));
    // An empty value is no key at all.
    assert_eq!(plan.identify(None, Some("")), Err(AuthError::Missing));
    assert_eq!(plan.identify(None, Some("   ")), Err(AuthError::Missing));
    assert_eq!(plan.identify(None, Some("key-c")), Err(AuthError::Unknown));
    assert_eq!(
        plan.identify(None, Some("Bearer key-a ")),
        Ok(Some(0)),
        "trailing space"
    );
    assert_eq!(
        plan.get(1).map(|c| c.name.as_str()),
        Some("team-b"),
        "indexes are configuration order"
    );
    assert_eq!(plan.get(2), None);
}

#[test]
fn not_required_lets_missing_and_unknown_through_anonymously() {
    let plan = two_clients(Some(false), None);
    assert!(!plan.required);
    assert_eq!(plan.identify(None, None), Ok(None));
    assert_eq!(plan.identify(None, Some("key-c")), Ok(None));
    // A known key is still its client.
    assert_eq!(plan.identify(None, Some("Bearer key-b")), Ok(Some(1)));

    let plan = two_clients(Some(false), Some("x-client-name"));
    assert_eq!(plan.identify(Some("nobody"), None), Ok(None));
    assert_eq!(plan.identify(Some("team-a"), None), Ok(Some(0)));
}

#[test]
fn identity_header_wins_over_the_credential() {
    let plan = two_clients(None, Some("X-Client-Name"));
    assert_eq!(plan.identity_header.as_deref(), Some("x-client-name"));
    // The verified name decides, whatever key (or JWT) the credential headers hold.
    assert_eq!(
        plan.identify(Some("team-b"), Some("Bearer key-a")),
        Ok(Some(1))
    );
    assert_eq!(
        plan.identify(Some("team-a"), Some("Bearer eyJhbGciOi.jwt")),
        Ok(Some(0))
    );
    assert_eq!(plan.identify(Some(" team-a "), None), Ok(Some(0)));
    // An unknown name is not rescued by a valid key.
    assert_eq!(
        plan.identify(Some("team-z"), Some("Bearer key-a")),
        Err(AuthError::Unknown)
    );
    assert_eq!(plan.identify(Some(""), None), Err(AuthError::Unknown));
    // Names are exact (case-sensitive), not globs.
    assert_eq!(plan.identify(Some("TEAM-A"), None), Err(AuthError::Unknown));
    assert_eq!(plan.identify(Some("team-*"), None), Err(AuthError::Unknown));
    // Without the header the key is looked at.
    assert_eq!(plan.identify(None, Some("key-b")), Ok(Some(1)));
    assert_eq!(plan.identify(None, None), Err(AuthError::Missing));
}

#[test]
fn identity_only_clients_need_no_hash() {
    let plan = clients(json!({"identity_header": "x-client-name",
                              "keys": [{"name": "jwt-only"}, key("keyed", &hash_of("k"))]}));
    assert_eq!(plan.identify(Some("jwt-only"), None), Ok(Some(0)));
    assert_eq!(plan.identify(None, Some("k")), Ok(Some(1)));
    assert_eq!(
        plan.identify(None, Some("jwt-only")),
        Err(AuthError::Unknown)
    );
}

#[test]
fn compiled_clients_keep_limits_profile_and_ledger_key() {
    let plan = clients(json!({"keys": [
        {"name": "team-a", "key_sha256": ABC_SHA256, "models": ["fast", "gpt-4o-mini*"],
         "rpm": 20, "tpm": 100000, "monthly_budget": 25.0, "profile": "cheapest"},
        {"name": "ops@corp.example", "key_sha256": hash_of("x")}
    ]}));
    let a = &plan.clients[0];
    assert_eq!(
        a.limits,
        Limits {
            rpm: Some(20),
            tpm: Some(100_000),
            monthly_budget_micro: Some(25_000_000)
        }
    );
    assert!(a.limits.any() && a.limits.settles());
    assert_eq!(a.profile, Some(Profile::Cheapest));
    assert_eq!(a.strategy(), Some(Strategy::Cheapest));
    assert_eq!(a.ledger_key, "llm_router.c.team-a");
    assert_eq!(a.ledger_key, format!("{KEY_PREFIX}team-a"));
    let b = &plan.clients[1];
    assert_eq!(b.limits, Limits::default());
    assert!(!b.limits.any() && !b.limits.settles());
    assert_eq!(b.models, None);
    assert_eq!(b.strategy(), None);
    // Only rpm: counted, but nothing to settle at the end.
    assert!(rpm(1).any() && !rpm(1).settles());
    assert!(tpm(1).settles() && budget(1).settles());
    // A fraction of a currency unit is kept in millionths.
    let plan = clients(json!({"keys": [{"name": "c", "key_sha256": ABC_SHA256,
                                        "monthly_budget": 0.25}]}));
    assert_eq!(plan.clients[0].limits.monthly_budget_micro, Some(250_000));
}

#[test]
fn profiles_stand_for_strategies() {
    assert_eq!(Profile::Cheapest.strategy(), Strategy::Cheapest);
    assert_eq!(Profile::Quality.strategy(), Strategy::Priority);
    assert_eq!(Profile::Latency.strategy(), Strategy::LowestLatency);
    assert_eq!(
        [Profile::Cheapest, Profile::Quality, Profile::Latency].map(Profile::name),
        ["cheapest", "quality", "latency"]
    );
}

// ---------------------------------------------------------------------------------------
// Configuration refusals
// ---------------------------------------------------------------------------------------

#[test]
fn bad_names_are_refused_naming_the_field() {
    let long = "n".repeat(65);
    for name in [
        "",
        "team a",
        "team/a",
        ".team",
        "team.",
        "a..b",
        "tëam",
        long.as_str(),
    ] {
        assert_eq!(
            refused_field(json!({"keys": [key("ok", ABC_SHA256), key(name, &hash_of("2"))]})),
            "clients.keys[1].name",
            "{name:?}"
        );
    }
    // The full alphabet of names, at the longest.
    let max = "a".repeat(64);
    for name in ["Team_A-1.x@corp", max.as_str()] {
        let plan = clients(json!({"keys": [key(name, ABC_SHA256)]}));
        assert_eq!(plan.clients[0].name, name);
    }
}

#[test]
fn bad_hashes_are_refused_naming_the_field() {
    let cases = [
        format!("z{}", &ABC_SHA256[1..]),
        ABC_SHA256[..63].to_owned(),
        format!("{ABC_SHA256}00"),
        String::new(),
        format!("0x{}", &ABC_SHA256[2..]),
    ];
    for hash in &cases {
        assert_eq!(
            refused_field(json!({"keys": [key("a", &hash_of("1")), key("b", hash)]})),
            "clients.keys[1].key_sha256",
            "{hash:?}"
        );
    }
}

#[test]
fn duplicate_hashes_and_names_are_refused() {
    // The same key in another case is the same key.
    let upper = ABC_SHA256.to_ascii_uppercase();
    let err = ClientsPlan::compile(
        &raw(json!({"keys": [key("a", ABC_SHA256), key("b", &upper)]})),
        "clients",
    )
    .expect_err("duplicate key");
    assert_eq!(err.field, "clients.keys[1].key_sha256");
    assert!(err.message.contains("clients.keys[0]"), "{}", err.message);
    assert_eq!(
        refused_field(json!({"keys": [key("a", ABC_SHA256), key("a", &hash_of("2"))]})),
        "clients.keys[1].name"
    );
    // Identity-only duplicates too.
    assert_eq!(
        refused_field(
            json!({"identity_header": "x-client", "keys": [{"name": "a"}, {"name": "b"}, {"name": "a"}]})
        ),
        "clients.keys[2].name"
    );
}

#[test]
fn a_missing_hash_needs_an_identity_header() {
    assert_eq!(
        refused_field(json!({"keys": [key("a", ABC_SHA256), {"name": "b"}]})),
        "clients.keys[1].key_sha256"
    );
    let plan = clients(json!({"identity_header": "x-client", "keys": [{"name": "b"}]}));
    assert_eq!(plan.clients.len(), 1);
}

#[test]
fn zero_or_out_of_range_limits_are_refused() {
    let with = |extra: Value| {
        let mut k = key("a", ABC_SHA256);
        for (name, v) in extra.as_object().unwrap() {
            k[name] = v.clone();
        }
        refused_field(json!({"keys": [k]}))
    };
    assert_eq!(with(json!({"rpm": 0})), "clients.keys[0].rpm");
    assert_eq!(with(json!({"tpm": 0})), "clients.keys[0].tpm");
    assert_eq!(
        with(json!({"tpm": 4_294_967_296u64})),
        "clients.keys[0].tpm"
    );
    for b in [json!(0), json!(0.0), json!(-1), json!(-0.5), json!(1e13)] {
        assert_eq!(
            with(json!({"monthly_budget": b})),
            "clients.keys[0].monthly_budget",
            "{b}"
        );
    }
    assert_eq!(with(json!({"models": []})), "clients.keys[0].models");
    assert_eq!(
        with(json!({"models": ["a", ""]})),
        "clients.keys[0].models[1]"
    );
    // The largest values are fine.
    let plan = clients(json!({"keys": [{"name": "a", "key_sha256": ABC_SHA256,
        "rpm": u32::MAX, "tpm": 4_294_967_295u64, "monthly_budget": 1e12}]}));
    assert_eq!(plan.clients[0].limits.tpm, Some(4_294_967_295));
    assert_eq!(
        plan.clients[0].limits.monthly_budget_micro,
        Some(1_000_000_000_000_000_000)
    );
}

#[test]
fn non_finite_budgets_are_refused() {
    // JSON has no NaN or infinity; the compiler still refuses them.
    for b in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0] {
        let r = RawClients {
            required: None,
            identity_header: None,
            keys: vec![RawClientKey {
                name: "a".to_owned(),
                key_sha256: Some(crate::config::raw::KeyHashes::One(ABC_SHA256.to_owned())),
                models: None,
                rpm: None,
                tpm: None,
                monthly_budget: Some(b),
                profile: None,
            }],
        };
        let err = ClientsPlan::compile(&r, "clients").expect_err("refused");
        assert_eq!(err.field, "clients.keys[0].monthly_budget", "{b}");
    }
}

#[test]
fn identity_header_must_be_a_header_of_its_own() {
    for h in [
        "authorization",
        "Authorization",
        "x-api-key",
        "API-KEY",
        "host",
        "content-type",
        "content-length",
        "",
        "x client",
        "x-client:",
    ] {
        assert_eq!(
            refused_field(json!({"identity_header": h, "keys": [key("a", ABC_SHA256)]})),
            "clients.identity_header",
            "{h:?}"
        );
    }
}

#[test]
fn whole_configurations_with_clients() {
    let ok = config(
        Some(json!({"identity_header": "x-client-name", "keys": [{"name": "a"}]})),
        None,
    );
    let plan = compile_config(&ok).expect("compiles");
    let c = plan.clients.as_ref().expect("clients");
    assert!(c.required);
    assert_eq!(c.identity_header.as_deref(), Some("x-client-name"));
    assert!(compile_config(&config(None, None))
        .expect("compiles")
        .clients
        .is_none());

    // Errors inside `clients` keep their path.
    assert_eq!(
        config_field(&config(
            Some(json!({"keys": [key("a", ABC_SHA256), key("b", "00")]})),
            None
        )),
        "clients.keys[1].key_sha256"
    );
    assert_eq!(
        config_field(&config(
            Some(json!({"identity_header": "authorization", "keys": []})),
            None
        )),
        "clients.identity_header"
    );
    // The header Envoy's route reads, default or configured, and an upstream's own header.
    assert_eq!(
        config_field(&config(
            Some(json!({"identity_header": "X-LLM-Router-Cluster", "keys": []})),
            None
        )),
        "clients.identity_header"
    );
    let mut custom = config(
        Some(json!({"identity_header": "x-route-to", "keys": []})),
        None,
    );
    custom["cluster_header"] = json!("X-Route-To");
    assert_eq!(config_field(&custom), "clients.identity_header");
    assert_eq!(
        config_field(&config(
            Some(json!({"identity_header": "x-extra", "keys": []})),
            None
        )),
        "clients.identity_header"
    );
}

#[test]
fn client_rules_need_a_clients_section() {
    let rule = |m: Value| json!([{"name": "r", "match": m, "use_model": "fast"}]);
    assert_eq!(
        config_field(&config(None, Some(rule(json!({"clients": ["team-*"]}))))),
        "rules[0].match.clients"
    );
    assert_eq!(
        config_field(&config(None, Some(rule(json!({"profile": ["cheapest"]}))))),
        "rules[0].match.profile"
    );
    let some = Some(json!({"keys": [key("team-a", ABC_SHA256)]}));
    assert_eq!(
        config_field(&config(some.clone(), Some(rule(json!({"clients": []}))))),
        "rules[0].match.clients"
    );
    assert_eq!(
        config_field(&config(some.clone(), Some(rule(json!({"clients": [""]}))))),
        "rules[0].match.clients[0]"
    );
    assert_eq!(
        config_field(&config(some.clone(), Some(rule(json!({"profile": []}))))),
        "rules[0].match.profile"
    );
    let plan = compile_config(&config(
        some,
        Some(rule(
            json!({"clients": ["team-*"], "profile": ["cheapest", "latency"]}),
        )),
    ))
    .expect("compiles");
    let m = &plan.rules[0].matcher;
    assert!(m.clients.as_ref().unwrap()[0].matches("team-a"));
    assert_eq!(m.profiles, Some(vec![Profile::Cheapest, Profile::Latency]));
}

#[test]
fn unknown_profiles_and_members_are_refused_by_the_parser() {
    let field = config_field(&config(
        Some(json!({"keys": [{"name": "a", "key_sha256": ABC_SHA256, "profile": "fastest"}]})),
        None,
    ));
    assert!(field.starts_with("clients.keys[0]"), "{field}");
    let field = config_field(&config(
        Some(json!({"keys": [{"name": "a", "key_sha256": ABC_SHA256, "key": "sk-plain"}]})),
        None,
    ));
    assert!(field.starts_with("clients.keys[0]"), "{field}");
    let field = config_field(&config(
        Some(json!({"keys": [{"name": "a", "key_sha256": ABC_SHA256, "rpm": -1}]})),
        None,
    ));
    assert!(field.starts_with("clients.keys[0]"), "{field}");
}

// ---------------------------------------------------------------------------------------
// Model globs
// ---------------------------------------------------------------------------------------

#[test]
fn allows_model_by_requested_name() {
    let c = client_with_models(Some(&["fast", "gpt-4o-mini*", "claude-?-opus", "openai/*"]));
    assert!(c.allows_model("fast"));
    assert!(!c.allows_model("fast2"), "exact is exact");
    assert!(!c.allows_model("Fast"), "case-sensitive");
    assert!(c.allows_model("gpt-4o-mini"));
    assert!(c.allows_model("gpt-4o-mini-2024-07-18"));
    assert!(!c.allows_model("gpt-4o"));
    assert!(c.allows_model("claude-3-opus"));
    assert!(!c.allows_model("claude-35-opus"));
    assert!(c.allows_model("openai/gpt-4o"));
    assert!(!c.allows_model("azure/gpt-4o"));
    let all = client_with_models(None);
    assert!(all.allows_model("anything") && all.allows_model(""));
}

#[test]
fn allows_target_by_model_id_or_upstream_slash_model() {
    let c = client_with_models(Some(&["gpt-4o-mini*", "local/*"]));
    assert!(c.allows_target("openai", "gpt-4o-mini"));
    assert!(c.allows_target("azure", "gpt-4o-mini-2024"));
    assert!(c.allows_target("local", "qwen2.5-7b"));
    assert!(!c.allows_target("openai", "gpt-4o"));
    assert!(!c.allows_target("localhost", "qwen2.5-7b"));
    let exact = client_with_models(Some(&["openai/gpt-4o"]));
    assert!(exact.allows_target("openai", "gpt-4o"));
    assert!(!exact.allows_target("azure", "gpt-4o"));
    assert!(!exact.allows_target("openai", "gpt-4o-mini"));
    let any_upstream = client_with_models(Some(&["*/gpt-4o"]));
    assert!(any_upstream.allows_target("azure", "gpt-4o"));
    assert!(!any_upstream.allows_target("azure", "gpt-4o-mini"));
    assert!(client_with_models(None).allows_target("x", "y"));
}

// ---------------------------------------------------------------------------------------
// The ledger: requests per minute
// ---------------------------------------------------------------------------------------

#[test]
fn window_constants() {
    assert_eq!((BUCKET_MS, WINDOW_MS), (10_000, 60_000));
    assert_eq!(T0 % BUCKET_MS, 0);
}

#[test]
fn admits_up_to_rpm_then_refuses_until_the_oldest_bucket_slides_out() {
    let limits = rpm(3);
    let mut u = ClientUsage::default();
    // One request in each of three buckets.
    for (i, at) in [T0 + 5_000, T0 + 15_000, T0 + 25_000]
        .into_iter()
        .enumerate()
    {
        let q = u.admit(at, &limits, 0).expect("under the limit");
        let a = q.requests.expect("rpm is reported");
        assert_eq!((a.limit, a.remaining), (3, 2 - i as u64));
        // The count next goes down when the first bucket leaves the window.
        assert_eq!(a.reset_ms, T0 + 60_000 - at, "after request {i}");
        assert_eq!(q.tokens, None);
    }
    // Full: the first bucket [T0, T0+10 s) leaves at T0+60 s.
    let l = limited(u.admit(T0 + 30_000, &limits, 0));
    assert_eq!(l.exceeded, Exceeded::Requests);
    assert_eq!((l.limit, l.used, l.retry_after_ms), (3, 3, 30_000));
    assert_eq!(
        l.quota.requests,
        Some(Allowance {
            limit: 3,
            remaining: 0,
            reset_ms: 30_000
        })
    );
    assert_eq!(
        limited(u.admit(T0 + 59_999, &limits, 0)).retry_after_ms,
        1,
        "last millisecond of the full window"
    );
    // A refusal counts nothing.
    assert_eq!(requests_in(&u, T0 + 59_999), 3);
    // At the bucket edge the oldest request is gone and one more fits.
    let q = u.admit(T0 + 60_000, &limits, 0).expect("recovered");
    assert_eq!(q.requests.map(|a| a.remaining), Some(0));
    assert_eq!(
        q.requests.map(|a| a.reset_ms),
        Some(10_000),
        "next the second bucket leaves"
    );
    // Full again: now the second bucket [T0+10 s, T0+20 s) has to leave.
    let l = limited(u.admit(T0 + 60_000, &limits, 0));
    assert_eq!(l.retry_after_ms, 10_000);
    assert!(u.admit(T0 + 70_000, &limits, 0).is_ok());
}

#[test]
fn a_window_filled_in_one_bucket_recovers_50_to_60_s_later() {
    let limits = rpm(2);
    // Filled at the very start of a bucket: 60 s.
    let mut u = ClientUsage::default();
    u.admit(T0, &limits, 0).unwrap();
    u.admit(T0, &limits, 0).unwrap();
    assert_eq!(limited(u.admit(T0, &limits, 0)).retry_after_ms, 60_000);
    assert_eq!(limited(u.admit(T0 + 59_999, &limits, 0)).retry_after_ms, 1);
    assert!(u.admit(T0 + 60_000, &limits, 0).is_ok());

    // Filled at the very end of a bucket: a little over 50 s.
    let mut u = ClientUsage::default();
    u.admit(T0 + 9_999, &limits, 0).unwrap();
    u.admit(T0 + 9_999, &limits, 0).unwrap();
    assert_eq!(
        limited(u.admit(T0 + 9_999, &limits, 0)).retry_after_ms,
        50_001
    );
    assert!(u.admit(T0 + 59_999, &limits, 0).is_err());
    assert!(u.admit(T0 + 60_000, &limits, 0).is_ok());
}

#[test]
fn the_retry_waits_for_the_oldest_bucket_that_holds_requests() {
    let limits = rpm(4);
    let mut u = ClientUsage::default();
    // Nothing in [T0, T0+20 s); two at T0+20 s, two at T0+30 s.
    for at in [T0 + 20_000, T0 + 20_000, T0 + 30_000, T0 + 30_000] {
        u.admit(at, &limits, 0).unwrap();
    }
    // The empty older buckets free nothing: the bucket of T0+20 s leaves at T0+80 s.
    let l = limited(u.admit(T0 + 40_000, &limits, 0));
    assert_eq!((l.used, l.retry_after_ms), (4, 40_000));
    assert!(u.admit(T0 + 79_999, &limits, 0).is_err());
    let q = u
        .admit(T0 + 80_000, &limits, 0)
        .expect("two left the window");
    assert_eq!(q.requests.map(|a| a.remaining), Some(1));
}

#[test]
fn a_quiet_minute_resets_the_window() {
    let limits = rpm(2);
    let mut u = ClientUsage::default();
    u.admit(T0, &limits, 0).unwrap();
    u.admit(T0, &limits, 0).unwrap();
    assert!(u.admit(T0 + 1, &limits, 0).is_err());
    // Long after: everything is gone, the full limit is back.
    let later = T0 + 10 * WINDOW_MS + 1_234;
    assert_eq!(requests_in(&u, later), 0);
    let q = u.quota(later, &limits);
    assert_eq!(
        q.requests,
        Some(Allowance {
            limit: 2,
            remaining: 2,
            reset_ms: 0
        }),
        "nothing counted: nothing to reset"
    );
    let q = u.admit(later, &limits, 0).unwrap();
    assert_eq!(q.requests.map(|a| a.remaining), Some(1));
}

#[test]
fn quota_of_a_fresh_ledger_and_of_no_limits() {
    let u = ClientUsage::default();
    let both = Limits {
        rpm: Some(5),
        tpm: Some(1000),
        monthly_budget_micro: None,
    };
    assert_eq!(
        u.quota(T0, &both),
        Quota {
            requests: Some(Allowance {
                limit: 5,
                remaining: 5,
                reset_ms: 0
            }),
            tokens: Some(Allowance {
                limit: 1000,
                remaining: 1000,
                reset_ms: 0
            }),
        }
    );
    assert_eq!(u.quota(T0, &Limits::default()), Quota::default());
    // Without any limit, admission always passes and still counts.
    let mut u = ClientUsage::default();
    for _ in 0..100 {
        assert_eq!(u.admit(T0, &Limits::default(), 7), Ok(Quota::default()));
    }
    assert_eq!(requests_in(&u, T0), 100);
    assert_eq!(tokens_in(&u, T0), 700);
}

// ---------------------------------------------------------------------------------------
// The ledger: tokens per minute
// ---------------------------------------------------------------------------------------

#[test]
fn tpm_counts_estimates_at_admission_and_refuses_at_the_limit() {
    let limits = tpm(100);
    let mut u = ClientUsage::default();
    let q = u.admit(T0, &limits, 60).unwrap();
    assert_eq!(
        q.tokens,
        Some(Allowance {
            limit: 100,
            remaining: 40,
            reset_ms: 60_000
        })
    );
    assert_eq!(q.requests, None);
    // Under the limit before it: admitted, though it takes the count past it.
    let q = u.admit(T0 + 1_000, &limits, 60).unwrap();
    assert_eq!(q.tokens.map(|a| a.remaining), Some(0), "saturates at 0");
    assert_eq!(tokens_in(&u, T0 + 1_000), 120);
    let l = limited(u.admit(T0 + 2_000, &limits, 1));
    assert_eq!(l.exceeded, Exceeded::Tokens);
    assert_eq!((l.limit, l.used, l.retry_after_ms), (100, 120, 58_000));
    assert_eq!(l.quota.tokens.map(|a| a.remaining), Some(0));
    assert!(u.admit(T0 + 60_000, &limits, 1).is_ok());
}

#[test]
fn settle_adds_the_tokens_beyond_the_estimate() {
    let limits = tpm(100);
    let mut u = ClientUsage::default();
    // b0: 20, b1: 20, b2: 20 + 60 reported at the end = 120.
    u.admit(T0, &limits, 20).unwrap();
    u.admit(T0 + 10_000, &limits, 20).unwrap();
    u.admit(T0 + 20_000, &limits, 20).unwrap();
    assert_eq!(tokens_in(&u, T0 + 20_000), 60);
    u.settle(T0 + 25_000, 60, 0);
    assert_eq!(tokens_in(&u, T0 + 25_000), 120);
    assert_eq!(requests_in(&u, T0 + 25_000), 3, "settling is no request");
    // Dropping b0 leaves 100, still not under 100: b1 has to go as well (T0+70 s).
    let l = limited(u.admit(T0 + 35_000, &limits, 0));
    assert_eq!((l.exceeded, l.used), (Exceeded::Tokens, 120));
    assert_eq!(l.retry_after_ms, 35_000);
    assert_eq!(
        l.quota.tokens.map(|a| a.reset_ms),
        Some(25_000),
        "the count next goes down when b0 leaves"
    );
    assert!(u.admit(T0 + 69_999, &limits, 0).is_err());
    assert!(u.admit(T0 + 70_000, &limits, 0).is_ok());
    // Nothing extra: nothing changes.
    let before = u;
    u.settle(T0 + 70_000, 0, 0);
    assert_eq!(u, before);
}

#[test]
fn requests_are_reported_before_tokens_when_both_are_over() {
    let limits = Limits {
        rpm: Some(1),
        tpm: Some(10),
        monthly_budget_micro: None,
    };
    let mut u = ClientUsage::default();
    let q = u.admit(T0, &limits, 50).unwrap();
    assert!(q.requests.is_some() && q.tokens.is_some());
    let l = limited(u.admit(T0, &limits, 0));
    assert_eq!(l.exceeded, Exceeded::Requests);
    assert_eq!(
        (
            l.quota.requests.map(|a| a.remaining),
            l.quota.tokens.map(|a| a.remaining)
        ),
        (Some(0), Some(0))
    );
}

// ---------------------------------------------------------------------------------------
// The ledger: monthly budget
// ---------------------------------------------------------------------------------------

#[test]
fn calendar_months_used_by_the_budget() {
    assert_eq!(month_index(NOV_2026), 682);
    assert_eq!(month_start_ms(683), DEC_2026);
}

#[test]
fn spent_budget_refuses_until_next_month() {
    let limits = budget(1_000_000);
    let mut u = ClientUsage::default();
    assert!(u.admit(NOV_2026, &limits, 0).is_ok());
    assert_eq!(u.month, 682);
    // Under budget: still admitted (a request may overshoot).
    u.settle(NOV_2026, 0, 999_999);
    assert!(u.admit(NOV_2026, &limits, 0).is_ok());
    u.settle(NOV_2026, 0, 1);
    assert_eq!(u.spent_micro, 1_000_000);
    let before = requests_in(&u, NOV_2026);
    let l = limited(u.admit(NOV_2026 + 1, &limits, 0));
    assert_eq!(l.exceeded, Exceeded::Budget);
    assert_eq!((l.limit, l.used), (1_000_000, 1_000_000));
    assert_eq!(l.retry_after_ms, DEC_2026 - (NOV_2026 + 1));
    assert_eq!(l.quota, Quota::default(), "no per-minute limits configured");
    assert_eq!(requests_in(&u, NOV_2026 + 1), before, "not counted");
    assert_eq!(limited(u.admit(DEC_2026 - 1, &limits, 0)).retry_after_ms, 1);
    // A new month starts afresh.
    assert!(u.admit(DEC_2026, &limits, 0).is_ok());
    assert_eq!((u.month, u.spent_micro), (683, 0));
}

#[test]
fn a_clock_behind_the_stored_month_changes_nothing() {
    let limits = budget(500);
    let mut u = ClientUsage::default();
    u.settle(DEC_2026 + 5, 0, 700);
    assert_eq!((u.month, u.spent_micro), (683, 700));
    // Another worker's clock still in November: December's spend stays, still refused,
    // and the retry waits for January.
    let l = limited(u.admit(DEC_2026 - 10, &limits, 0));
    assert_eq!(l.exceeded, Exceeded::Budget);
    assert_eq!((u.month, u.spent_micro), (683, 700));
    assert_eq!(l.retry_after_ms, month_start_ms(684) - (DEC_2026 - 10));
    // Its settlement adds to the stored month.
    u.settle(DEC_2026 - 10, 0, 5);
    assert_eq!((u.month, u.spent_micro), (683, 705));
}

#[test]
fn budget_is_checked_before_the_window() {
    let limits = Limits {
        rpm: Some(1),
        tpm: None,
        monthly_budget_micro: Some(10),
    };
    let mut u = ClientUsage::default();
    let q = u.admit(NOV_2026, &limits, 0).unwrap();
    assert_eq!(q.requests.map(|a| a.remaining), Some(0));
    u.settle(NOV_2026, 0, 10);
    let l = limited(u.admit(NOV_2026, &limits, 0));
    assert_eq!(l.exceeded, Exceeded::Budget);
    // The refusal still reports the per-minute figures.
    assert_eq!(l.quota.requests.map(|a| a.remaining), Some(0));
}

#[test]
fn settle_saturates_instead_of_overflowing() {
    let mut u = ClientUsage {
        month: month_index(NOV_2026),
        spent_micro: u64::MAX - 1,
        ..ClientUsage::default()
    };
    u.settle(NOV_2026, u64::MAX, 10);
    assert_eq!(u.spent_micro, u64::MAX);
    assert_eq!(tokens_in(&u, NOV_2026), u64::from(u32::MAX));
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

fn sample_usage() -> ClientUsage {
    let mut u = ClientUsage::default();
    let limits = Limits {
        rpm: Some(100),
        tpm: Some(100_000),
        monthly_budget_micro: Some(1 << 40),
    };
    u.admit(NOV_2026, &limits, 1234).unwrap();
    u.admit(NOV_2026 + 20_000, &limits, 56).unwrap();
    u.settle(NOV_2026 + 20_000, 7, 123_456_789_012);
    u
}

#[test]
fn records_round_trip_with_a_fixed_layout() {
    let u = sample_usage();
    let bytes = u.encode();
    assert_eq!(bytes.len(), ENCODED_LEN);
    assert_eq!(ENCODED_LEN, 96);
    assert_eq!(&bytes[..4], &[VERSION, 0, 0, 0]);
    assert_eq!(bytes[4..8], 682u32.to_le_bytes());
    assert_eq!(bytes[8..16], 123_456_789_012u64.to_le_bytes());
    assert_eq!(ClientUsage::decode(&bytes), Some(u));
    assert_eq!(
        ClientUsage::decode(&ClientUsage::default().encode()),
        Some(ClientUsage::default())
    );
    let back = ClientUsage::decode(&bytes).unwrap();
    assert_eq!(requests_in(&back, NOV_2026 + 20_000), 2);
    assert_eq!(tokens_in(&back, NOV_2026 + 20_000), 1234 + 56 + 7);
}

#[test]
fn records_of_another_length_or_version_do_not_decode() {
    let bytes = sample_usage().encode();
    assert_eq!(ClientUsage::decode(&bytes[..ENCODED_LEN - 1]), None);
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(ClientUsage::decode(&longer), None);
    assert_eq!(ClientUsage::decode(&[]), None);
    assert_eq!(ClientUsage::decode(&[0; 8]), None, "a plain counter");
    for (at, value) in [(0, VERSION + 1), (0, 0), (1, 1), (3, 0xff)] {
        let mut b = bytes.clone();
        b[at] = value;
        assert_eq!(ClientUsage::decode(&b), None, "byte {at} = {value}");
    }
}

#[test]
fn an_undecodable_record_reads_as_fresh() {
    let mut host = MockHost::default();
    host.shared
        .insert("llm_router.c.a".to_owned(), (vec![9; ENCODED_LEN], 1));
    let u: ClientUsage = shared::read(&host, "llm_router.c.a").unwrap();
    assert_eq!(u, ClientUsage::default());
    let u: ClientUsage = shared::read(&host, "llm_router.c.missing").unwrap();
    assert_eq!(u, ClientUsage::default());
    // And is overwritten by the next update.
    let limits = rpm(5);
    let (u, r) = shared::update(
        &mut host,
        "llm_router.c.a",
        CAS_RETRIES,
        |u: &mut ClientUsage| u.admit(T0, &limits, 0),
    )
    .unwrap();
    assert!(r.is_ok());
    assert_eq!(host.shared["llm_router.c.a"].0, u.encode());
}

// ---------------------------------------------------------------------------------------
// Header formats
// ---------------------------------------------------------------------------------------

#[test]
fn durations_are_written_as_openai_does() {
    let cases = [
        (0, "0ms"),
        (1, "1ms"),
        (250, "250ms"),
        (999, "999ms"),
        (1_000, "1s"),
        (1_001, "2s"),
        (59_000, "59s"),
        (59_001, "1m0s"),
        (60_000, "1m0s"),
        (61_000, "1m1s"),
        (3_599_000, "59m59s"),
        (3_600_000, "1h0m0s"),
        (3_601_000, "1h0m1s"),
        (90_061_000, "25h1m1s"),
    ];
    for (ms, text) in cases {
        assert_eq!(duration(ms), text, "{ms} ms");
    }
}

#[test]
fn retry_after_rounds_up_to_at_least_one_second() {
    for (ms, secs) in [
        (0, 1),
        (1, 1),
        (999, 1),
        (1_000, 1),
        (1_001, 2),
        (30_000, 30),
        (59_999, 60),
        (635_258_194, 635_259),
    ] {
        assert_eq!(retry_after_seconds(ms), secs, "{ms} ms");
    }
}

#[test]
fn rate_limit_headers_cover_the_configured_limits_only() {
    let requests = Allowance {
        limit: 20,
        remaining: 3,
        reset_ms: 12_000,
    };
    let tokens = Allowance {
        limit: 1000,
        remaining: 0,
        reset_ms: 61_000,
    };
    let both = rate_limit_headers(&Quota {
        requests: Some(requests),
        tokens: Some(tokens),
    });
    let expected = [
        ("x-ratelimit-limit-requests", "20"),
        ("x-ratelimit-remaining-requests", "3"),
        ("x-ratelimit-reset-requests", "12s"),
        ("x-ratelimit-limit-tokens", "1000"),
        ("x-ratelimit-remaining-tokens", "0"),
        ("x-ratelimit-reset-tokens", "1m1s"),
    ];
    let got: Vec<(&str, &str)> = both.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(got, expected);
    let only_tokens = rate_limit_headers(&Quota {
        requests: None,
        tokens: Some(tokens),
    });
    assert_eq!(only_tokens.len(), 3);
    assert!(only_tokens.iter().all(|(k, _)| k.ends_with("-tokens")));
    assert!(rate_limit_headers(&Quota::default()).is_empty());
}

// ---------------------------------------------------------------------------------------
// Compare-and-swap
// ---------------------------------------------------------------------------------------

fn admit_on(host: &mut dyn Host, key: &str, limits: &Limits, now: u64) -> Result<Quota, Limited> {
    match shared::update(host, key, CAS_RETRIES, |u: &mut ClientUsage| {
        u.admit(now, limits, 0)
    }) {
        Ok((_, r)) => r,
        Err(e) => panic!("shared data: {e}"),
    }
}

#[test]
fn admissions_through_shared_data_count_exactly_despite_mock_conflicts() {
    let key = ledger::key("team-a");
    let limits = rpm(20);
    let mut host = MockHost {
        // Lost races on the first writes (MockHost's rival writes an 8-byte counter, which
        // is no record and reads as fresh).
        cas_conflicts: 5,
        ..MockHost::default()
    };
    let ok = (0..25)
        .filter(|_| admit_on(&mut host, &key, &limits, T0).is_ok())
        .count();
    assert_eq!(ok, 20);
    assert_eq!(host.cas_conflicts, 0, "every conflict was met and retried");
    let stored: ClientUsage = shared::read(&host, &key).unwrap();
    assert_eq!(requests_in(&stored, T0), 20);
}

/// MockHost's shared data, where another worker admits a request on the same record between
/// our read and our write, `races` times.
struct RacingHost {
    inner: MockHost,
    races: usize,
    limits: Limits,
    now: u64,
    /// Admissions the other worker won.
    theirs_ok: usize,
    /// The previous write was raced (the retry that follows is not, so each of our updates
    /// loses exactly once).
    raced_last: bool,
}

impl Host for RacingHost {
    fn request_header(&self, name: &str) -> HostResult<Option<String>> {
        self.inner.request_header(name)
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> HostResult<()> {
        self.inner.set_request_header(name, value)
    }
    fn request_body(&self, len: usize) -> HostResult<Option<Vec<u8>>> {
        self.inner.request_body(len)
    }
    fn replace_request_body(&mut self, current_len: usize, body: &[u8]) -> HostResult<()> {
        self.inner.replace_request_body(current_len, body)
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> HostResult<()> {
        self.inner.set_response_header(name, value)
    }
    fn shared_data(&self, key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)> {
        self.inner.shared_data(key)
    }
    fn set_shared_data(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        let race = self.races > 0 && !self.raced_last && self.inner.shared.contains_key(key);
        self.raced_last = race;
        if race {
            self.races -= 1;
            let (theirs, their_cas) = self.inner.shared_data(key)?;
            let mut u = theirs
                .as_deref()
                .and_then(ClientUsage::decode)
                .unwrap_or_default();
            if u.admit(self.now, &self.limits, 0).is_ok() {
                self.theirs_ok += 1;
            }
            self.inner.set_shared_data(key, &u.encode(), their_cas)?;
        }
        self.inner.set_shared_data(key, value, cas)
    }
    fn send_local_reply(
        &mut self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HostResult<()> {
        self.inner.send_local_reply(status, headers, body)
    }
    fn now_nanos(&self) -> u64 {
        self.inner.now_nanos
    }
}

#[test]
fn concurrent_admissions_never_exceed_rpm() {
    let key = ledger::key("team-a");
    let limits = rpm(20);
    let mut host = RacingHost {
        inner: MockHost::default(),
        races: 0,
        limits,
        now: T0,
        theirs_ok: 0,
        raced_last: false,
    };
    // The record exists ahead of traffic (as `ensure` makes it at configuration time).
    shared::ensure::<ClientUsage>(&mut host, &key, CAS_RETRIES).unwrap();
    // Between each of our writes another worker admits one: 25 of ours, 25 of theirs.
    host.races = 25;
    let ours_ok = (0..25)
        .filter(|_| admit_on(&mut host, &key, &limits, T0).is_ok())
        .count();
    assert_eq!(host.races, 0);
    assert_eq!(
        ours_ok + host.theirs_ok,
        20,
        "ours {ours_ok}, theirs {}",
        host.theirs_ok
    );
    let stored: ClientUsage = shared::read(&host, &key).unwrap();
    assert_eq!(requests_in(&stored, T0), 20);
}

#[test]
fn ensure_creates_a_fresh_record_and_keeps_an_existing_one() {
    let mut host = MockHost::default();
    let key = ledger::key("b");
    shared::ensure::<ClientUsage>(&mut host, &key, CAS_RETRIES).unwrap();
    assert_eq!(
        host.shared[&key].0,
        ClientUsage::default().encode(),
        "fixed size from the start"
    );
    admit_on(&mut host, &key, &rpm(5), T0).unwrap();
    let before = host.shared[&key].clone();
    shared::ensure::<ClientUsage>(&mut host, &key, CAS_RETRIES).unwrap();
    assert_eq!(host.shared[&key], before);
}

#[test]
fn a_host_that_always_conflicts_gives_up() {
    let key = ledger::key("a");
    let mut host = MockHost::default();
    admit_on(&mut host, &key, &rpm(5), T0).unwrap();
    host.cas_conflicts = usize::MAX;
    let mut runs = 0;
    let r = shared::update(&mut host, &key, CAS_RETRIES, |u: &mut ClientUsage| {
        runs += 1;
        u.admit(T0, &rpm(5), 0)
    });
    assert_eq!(
        r.map(|_| ()),
        Err(SharedError::Contended {
            attempts: CAS_RETRIES
        })
    );
    assert_eq!(runs, CAS_RETRIES);
}

#[test]
fn failing_shared_data_is_an_error_not_a_panic() {
    let mut host = MockHost {
        shared_data_fails: true,
        ..MockHost::default()
    };
    let r = shared::update(
        &mut host,
        "llm_router.c.a",
        CAS_RETRIES,
        |u: &mut ClientUsage| u.admit(T0, &rpm(1), 0),
    );
    assert!(matches!(r, Err(SharedError::Host(_))), "{r:?}");
}

// ---------------------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------------------

#[test]
fn stats_are_defined_per_client_name_and_counted() {
    use super::stats::{ClientStat, UNAUTHORIZED_STAT};
    let plan = clients(
        json!({"keys": [key("team-a", &hash_of("a")), key("ops@corp.example", &hash_of("b"))]}),
    );
    let mut host = MockHost::default();
    let pending = std::rc::Rc::new(crate::metrics::Pending::default());
    let stats = ClientStats::define(&plan, &mut host, std::rc::Rc::clone(&pending));
    let names: Vec<String> = host.metrics.iter().map(|(_, n)| n.clone()).collect();
    for stat in ClientStat::ALL {
        let s = stat.suffix();
        assert!(names.contains(&format!("llm_router.client.team-a.{s}")));
        assert!(names.contains(&format!("llm_router.client.ops@corp.example.{s}")));
    }
    assert!(names.iter().any(|n| n == UNAUTHORIZED_STAT));
    assert_eq!(names.len(), 2 * ClientStat::ALL.len() + 1);
    stats.add(1, ClientStat::CostMicro, 2_500);
    stats.add(1, ClientStat::CostMicro, 0);
    stats.add(0, ClientStat::Requests, 1);
    stats.add(7, ClientStat::Requests, 1);
    stats.unauthorized();
    pending.flush(&mut host);
    assert_eq!(
        host.metric("llm_router.client.ops@corp.example.cost_micro"),
        Some(2_500)
    );
    assert_eq!(host.metric("llm_router.client.team-a.requests"), Some(1));
    assert_eq!(host.metric("llm_router.client.team-a.cost_micro"), Some(0));
    assert_eq!(host.metric(UNAUTHORIZED_STAT), Some(1));
    // No key, nor its hash, in any stat name.
    assert!(names.iter().all(|n| !n.contains(&hash_of("a")[..16])));
}

#[test]
fn the_key_comes_from_a_bearer_authorization_else_x_api_key_else_api_key() {
    let from = |headers: &[(&str, &str)]| {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        credential(|name| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    };
    assert_eq!(
        from(&[("authorization", "Bearer a")]).as_deref(),
        Some("Bearer a")
    );
    assert_eq!(
        from(&[("authorization", "bearer a"), ("x-api-key", "b")]).as_deref(),
        Some("bearer a")
    );
    // Another scheme or an empty bearer does not hide a key in the next header.
    assert_eq!(
        from(&[("authorization", "Basic dXNlcg=="), ("x-api-key", "b")]).as_deref(),
        Some("b")
    );
    assert_eq!(
        from(&[("authorization", "Bearer  "), ("api-key", "c")]).as_deref(),
        Some("c")
    );
    assert_eq!(
        from(&[("x-api-key", " "), ("api-key", "c")]).as_deref(),
        Some("c")
    );
    assert_eq!(from(&[("authorization", "Basic dXNlcg==")]), None);
    assert_eq!(from(&[]), None);
}

#[test]
fn a_target_has_one_price_and_budget_wherever_it_is_listed() {
    let with = |fast: Value, smart: Value| {
        let mut v = config(None, None);
        v["models"] = json!({
            "fast": {"targets": [fast]},
            "smart": {"targets": [smart]}
        });
        v
    };
    let t = |extra: Value| {
        let mut t = json!({"upstream": "openai", "model": "gpt-4o-mini"});
        for (k, v) in extra.as_object().unwrap() {
            t[k] = v.clone();
        }
        t
    };
    let price = |i: f64| json!({"price": {"input": i, "output": 1}});
    // Given once: that price serves every listing (the cost of a request does not depend on
    // which alias chose the target).
    let plan = compile_config(&with(t(json!({})), t(price(2.0)))).unwrap();
    let r = &plan.targets["llm_router.h.openai/gpt-4o-mini"];
    assert_eq!(r.price.map(|p| p.input), Some(2.0));
    assert!(compile_config(&with(t(price(2.0)), t(price(2.0)))).is_ok());
    // Two different ones: refused, naming the later listing (aliases in name order).
    assert_eq!(
        config_field(&with(t(price(1.0)), t(price(2.0)))),
        "models.smart.targets[0].price"
    );
    assert_eq!(
        config_field(&with(
            t(json!({"budget": {"rpm": 5}})),
            t(json!({"budget": {"rpm": 6}}))
        )),
        "models.smart.targets[0].budget"
    );
}

#[test]
fn a_client_may_have_several_keys_while_rotating() {
    let (old, new) = ("sk-old", "sk-new");
    let plan = clients(json!({"keys": [
        {"name": "team-a", "key_sha256": [hash_of(old), hash_of(new).to_uppercase()]},
        key("team-b", &hash_of("sk-b"))
    ]}));
    assert_eq!(plan.identify(None, Some(old)), Ok(Some(0)));
    assert_eq!(
        plan.identify(None, Some(&format!("Bearer {new}"))),
        Ok(Some(0))
    );
    assert_eq!(plan.identify(None, Some("sk-b")), Ok(Some(1)));
    // Each hash is checked on its own, and is unique across all clients.
    let bad = json!({"keys": [{"name": "a", "key_sha256": [hash_of(old), "xyz"]}]});
    assert_eq!(refused_field(bad), "clients.keys[0].key_sha256[1]");
    let taken = json!({"keys": [key("a", &hash_of(old)),
                                {"name": "b", "key_sha256": [hash_of(new), hash_of(old)]}]});
    assert_eq!(refused_field(taken), "clients.keys[1].key_sha256[1]");
    let empty = json!({"keys": [{"name": "a", "key_sha256": []}]});
    assert_eq!(refused_field(empty), "clients.keys[0].key_sha256");
    let many: Vec<String> = (0..9).map(|i| hash_of(&format!("k{i}"))).collect();
    let too_many = json!({"keys": [{"name": "a", "key_sha256": many}]});
    assert_eq!(refused_field(too_many), "clients.keys[0].key_sha256");
    // Neither a string nor a list of strings.
    let odd = json!({"keys": [{"name": "a", "key_sha256": 7}]});
    let e = compile_config(&config(Some(odd), None)).expect_err("refused");
    assert_eq!(e.field, "clients.keys[0].key_sha256");
    assert!(
        e.message.contains("a hex SHA-256 string or a list of them"),
        "{e}"
    );
}
