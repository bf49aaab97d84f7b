//! Scoring the classifier against a labelled set (`wasm-tests/classify/`): accuracy per task,
//! complexity exact and within one step, confusion tables. For the native evaluation command
//! (`src/bin/llm-router-eval.rs`) and the regression guard of `make test`; the `.wasm` never
//! calls it (and links none of it).

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

use super::{ClassifierPlan, Complexity, Task};
use crate::endpoint::Endpoint;
use crate::path::{classify as classify_path, PathKind};

/// The tasks in table order.
pub const TASKS: [Task; 8] = [
    Task::Coding,
    Task::Math,
    Task::Reasoning,
    Task::Summarization,
    Task::Extraction,
    Task::Vision,
    Task::Embedding,
    Task::General,
];
/// The complexities in table order.
pub const LEVELS: [Complexity; 4] = [
    Complexity::Low,
    Complexity::Medium,
    Complexity::High,
    Complexity::Xhigh,
];

/// One labelled request, as a line of the set holds it.
#[derive(Debug, Clone, Deserialize)]
pub struct Example {
    pub id: String,
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    pub task: Task,
    /// Absent for sets labelled with a task only (HumanEval).
    #[serde(default)]
    pub complexity: Option<Complexity>,
    pub body: Value,
}

fn default_endpoint() -> String {
    "/v1/chat/completions".to_owned()
}

impl Example {
    /// Reads a JSONL set: one example per non-empty line; errors name the line.
    pub fn parse_set(text: &str) -> Result<Vec<Example>, String> {
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(n, line)| serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1)))
            .collect()
    }

    /// A HumanEval problem sent as it comes: its prompt as the one user message.
    pub fn from_humaneval(line: &str) -> Result<Example, String> {
        let v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let id = v["task_id"].as_str().ok_or("no task_id")?.to_owned();
        let prompt = v["prompt"].as_str().ok_or("no prompt")?;
        Ok(Example {
            id,
            endpoint: default_endpoint(),
            task: Task::Coding,
            complexity: None,
            body: serde_json::json!({
                "model": "auto",
                "messages": [{"role": "user", "content": prompt}],
            }),
        })
    }

    pub fn endpoint(&self) -> Result<Endpoint, String> {
        match classify_path(&self.endpoint) {
            PathKind::Endpoint { endpoint, .. } => Ok(endpoint),
            _ => Err(format!(
                "{}: `{}` is no routed endpoint",
                self.id, self.endpoint
            )),
        }
    }
}

/// One example the classifier got wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct Miss {
    pub id: String,
    pub want: (Task, Option<Complexity>),
    pub got: (Task, Complexity),
}

/// The scores of one set.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// `[want][got]`, in [`TASKS`] order.
    pub tasks: [[u32; 8]; 8],
    /// `[want][got]`, in [`LEVELS`] order.
    pub levels: [[u32; 4]; 4],
    pub misses: Vec<Miss>,
}

fn task_index(t: Task) -> usize {
    TASKS
        .iter()
        .position(|x| *x == t)
        .unwrap_or(TASKS.len() - 1)
}

fn level_index(c: Complexity) -> usize {
    LEVELS.iter().position(|x| *x == c).unwrap_or(0)
}

fn ratio(good: u32, all: u32) -> f64 {
    if all == 0 {
        1.0
    } else {
        f64::from(good) / f64::from(all)
    }
}

impl Report {
    /// Classifies every example with `plan` and scores it.
    pub fn run(plan: &ClassifierPlan, set: &[Example]) -> Result<Report, String> {
        let mut report = Report::default();
        for ex in set {
            let got = plan.classify(&ex.body, ex.endpoint()?);
            let (want_t, got_t) = (task_index(ex.task), task_index(got.task));
            if let Some(row) = report.tasks.get_mut(want_t) {
                if let Some(cell) = row.get_mut(got_t) {
                    *cell += 1;
                }
            }
            let mut level_ok = true;
            if let Some(want) = ex.complexity {
                let (w, g) = (level_index(want), level_index(got.complexity));
                if let Some(cell) = report.levels.get_mut(w).and_then(|r| r.get_mut(g)) {
                    *cell += 1;
                }
                level_ok = w == g;
            }
            if want_t != got_t || !level_ok {
                report.misses.push(Miss {
                    id: ex.id.clone(),
                    want: (ex.task, ex.complexity),
                    got: (got.task, got.complexity),
                });
            }
        }
        Ok(report)
    }

    pub fn examples(&self) -> u32 {
        self.tasks.iter().flatten().sum()
    }

    /// Share of examples whose task is right.
    pub fn task_accuracy(&self) -> f64 {
        let good = (0..8).map(|i| self.tasks[i][i]).sum();
        ratio(good, self.examples())
    }

    /// Share of the examples of task `t` classified `t`.
    pub fn task_recall(&self, t: Task) -> f64 {
        let i = task_index(t);
        ratio(self.tasks[i][i], self.tasks[i].iter().sum())
    }

    fn level_total(&self) -> u32 {
        self.levels.iter().flatten().sum()
    }

    /// Share of labelled complexities that are exactly right.
    pub fn complexity_exact(&self) -> f64 {
        let good = (0..4).map(|i| self.levels[i][i]).sum();
        ratio(good, self.level_total())
    }

    /// Share of labelled complexities at most one step off.
    pub fn complexity_within_one(&self) -> f64 {
        let mut good = 0;
        for (w, row) in self.levels.iter().enumerate() {
            for (g, n) in row.iter().enumerate() {
                if w.abs_diff(g) <= 1 {
                    good += n;
                }
            }
        }
        ratio(good, self.level_total())
    }

    /// The scores and both confusion tables, as the evaluation command prints them.
    pub fn render(&self, name: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "== {name}: {} examples; task {:.3}; complexity exact {:.3}, within one step {:.3}",
            self.examples(),
            self.task_accuracy(),
            self.complexity_exact(),
            self.complexity_within_one()
        );
        let names: Vec<String> = TASKS.iter().map(|t| task_name(*t)).collect();
        let _ = write!(out, "{:>14} |", "want \\ got");
        for n in &names {
            let _ = write!(out, " {:>5}", short(n));
        }
        let _ = writeln!(out, " | recall");
        for (i, row) in self.tasks.iter().enumerate() {
            if row.iter().sum::<u32>() == 0 {
                continue;
            }
            let _ = write!(out, "{:>14} |", names[i]);
            for n in row {
                let _ = write!(out, " {n:>5}");
            }
            let _ = writeln!(out, " | {:.3}", self.task_recall(TASKS[i]));
        }
        if self.level_total() > 0 {
            let _ = writeln!(out, "{:>14} |   low   med  high xhigh", "complexity");
            for (i, row) in self.levels.iter().enumerate() {
                let _ = write!(out, "{:>14} |", level_name(LEVELS[i]));
                for n in row {
                    let _ = write!(out, " {n:>5}");
                }
                let _ = writeln!(out);
            }
        }
        out
    }
}

pub fn task_name(t: Task) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub fn level_name(c: Complexity) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn short(name: &str) -> &str {
    name.get(..5).unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::ClassifierConfig;

    #[test]
    fn a_set_is_scored_per_task_and_level() {
        let set = Example::parse_set(concat!(
            r#"{"id":"a","task":"summarization","complexity":"low","body":{"model":"auto","messages":[{"role":"user","content":"Summarize this: the cat sat."}]}}"#,
            "\n\n",
            r#"{"id":"b","task":"coding","complexity":"xhigh","body":{"model":"auto","messages":[{"role":"user","content":"hi"}]}}"#,
            "\n",
            r#"{"id":"c","endpoint":"/v1/embeddings","task":"embedding","complexity":"low","body":{"model":"auto","input":"x"}}"#,
        ))
        .unwrap();
        // The heuristics: fixed rules (the model changes with its training).
        let cfg = ClassifierConfig {
            method: crate::classify::Method::Heuristic,
            ..ClassifierConfig::default()
        };
        let plan = ClassifierPlan::compile(&cfg, "classifier").unwrap();
        let r = Report::run(&plan, &set).unwrap();
        assert_eq!(r.examples(), 3);
        assert!(
            (r.task_accuracy() - 2.0 / 3.0).abs() < 1e-9,
            "{}",
            r.render("t")
        );
        // "hi" is general and low: three steps below xhigh.
        assert!((r.complexity_within_one() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(r.misses.len(), 1);
        assert_eq!(r.misses[0].id, "b");
        assert!(r.render("t").contains("coding"));
    }

    #[test]
    fn bad_lines_are_named() {
        let err = Example::parse_set("\n{\"id\":1}").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        let he =
            Example::from_humaneval(r#"{"task_id":"HumanEval/0","prompt":"def f():\n"}"#).unwrap();
        assert_eq!((he.task, he.complexity), (Task::Coding, None));
    }
}
