//! llm-router-limits: the limit definitions a rate-limit service needs for a plugin
//! configuration (`rate_limit_service`), made by the router's own configuration compiler so
//! that they cannot drift from it: Limitador's limits file (default) or envoyproxy/ratelimit's
//! configuration. A native helper, not part of the .wasm (`make limits`).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::io::{self, Read, Write};
use std::process::ExitCode;

use llm_router::config::plan::compile;
use llm_router::ratelimit::definitions::{envoy_ratelimit, limitador};

const USAGE: &str = "\
usage: llm-router-limits [--format limitador|ratelimit] CONFIG.json
       llm-router-limits --help

CONFIG.json: the filter's plugin configuration (JSON; - reads stdin). Prints the limits of
its clients (rpm, tpm, monthly_budget) and of its targets (budget.rpm, budget.tpm) for the
router's descriptors: Limitador's limits file (default) or envoyproxy/ratelimit's config.
Provider keys are not needed (key_env variables are not read).
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (format, path) = match args.as_slice() {
        ["-h" | "--help"] => return print(USAGE),
        [path] => ("limitador", *path),
        ["--format", format, path] => (*format, *path),
        _ => return fail(2, USAGE),
    };
    if !matches!(format, "limitador" | "ratelimit") {
        return fail(2, "--format is limitador or ratelimit");
    }
    let read = if path == "-" {
        let mut text = Vec::new();
        io::stdin().read_to_end(&mut text).map(|_| text)
    } else {
        std::fs::read(path)
    };
    let json = match read {
        Ok(json) => json,
        Err(e) => return fail(1, &format!("{path}: {e}")),
    };
    // Every provider key counts as set: no target is left out for want of one.
    let plan = match compile(&json, &|_| Some(String::new())) {
        Ok(plan) => plan,
        Err(e) => return fail(1, &e.to_string()),
    };
    if plan.rate_limit_service.is_none() {
        return fail(1, "the configuration has no rate_limit_service");
    }
    let text = match format {
        "ratelimit" => envoy_ratelimit(&plan),
        _ => limitador(&plan),
    };
    print(&text)
}

fn print(text: &str) -> ExitCode {
    match io::stdout().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    let _ = writeln!(io::stderr(), "llm-router-limits: {message}");
    ExitCode::from(code)
}
