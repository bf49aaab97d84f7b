//! llm-router-train: trains the classifier's linear model (`src/classify/learned.rs`) on
//! labelled sets and writes its weights (`make train` writes `src/classify/model.bin`).
//!
//! A native helper (not part of the .wasm). Multinomial logistic regression, one softmax
//! over the six text tasks and one over the four complexities, on the same features,
//! AdaGrad with L2, examples in a fixed pseudo-random order: the same sets give the same
//! weights. `--cv K` reports K-fold cross-validation on the sets instead of writing, to
//! choose the settings without looking at the held-out set.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::collections::HashSet;
use std::process::ExitCode;

use llm_router::classify::eval::Example;
use llm_router::classify::learned::{
    argmax, Model, BUCKETS, DENSE, LEVEL_OUT, OUTPUTS, ROWS, TASK_OUT,
};
use llm_router::classify::{ClassifierPlan, Task};

const USAGE: &str = "\
usage: llm-router-train [--out FILE | --cv K | --by-set | --test SET] [--exclude SET]
                        [--epochs N] [--lr X] [--l2 X] SET.jsonl...
  --exclude SET   leave out every training example whose body is also in SET (the held-out
                  set: two authors may write the same classic prompt)
";

#[derive(Debug, Clone, Copy)]
struct Settings {
    epochs: usize,
    lr: f32,
    l2: f32,
}

/// One example as the trainer sees it.
struct Sample {
    /// Hashed slots with their summed values.
    sparse: Vec<(u32, f32)>,
    dense: [f32; DENSE],
    /// Index in TASK_OUT; `None` for tasks decided by rules (vision, embedding).
    task: Option<usize>,
    level: Option<usize>,
}

fn sample(ex: &Example) -> Result<Option<Sample>, String> {
    let endpoint = ex.endpoint()?;
    if ex.task == llm_router::classify::Task::Embedding {
        return Ok(None);
    }
    let (mut slots, dense) = ClassifierPlan::features(&ex.body, endpoint);
    slots.sort_unstable_by_key(|(s, _)| *s);
    let mut sparse: Vec<(u32, f32)> = Vec::new();
    for (s, value) in slots {
        match sparse.last_mut() {
            Some((last, v)) if *last == s => *v += value,
            _ => sparse.push((s, value)),
        }
    }
    Ok(Some(Sample {
        sparse,
        dense,
        task: TASK_OUT.iter().position(|t| *t == ex.task),
        level: ex
            .complexity
            .and_then(|c| LEVEL_OUT.iter().position(|l| *l == c)),
    }))
}

struct Trainer {
    w: Vec<f32>,
    g: Vec<f32>,
    bias: [f32; OUTPUTS],
    gb: [f32; OUTPUTS],
}

fn softmax(z: &mut [f32]) {
    let max = z.iter().copied().fold(f32::MIN, f32::max);
    let mut sum = 0.0;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in z.iter_mut() {
        *v /= sum;
    }
}

impl Trainer {
    fn new() -> Trainer {
        Trainer {
            w: vec![0.0; ROWS * OUTPUTS],
            g: vec![0.0; ROWS * OUTPUTS],
            bias: [0.0; OUTPUTS],
            gb: [0.0; OUTPUTS],
        }
    }

    fn rows<'a>(s: &'a Sample) -> impl Iterator<Item = (usize, f32)> + 'a {
        s.sparse.iter().map(|&(slot, v)| (slot as usize, v)).chain(
            s.dense
                .iter()
                .enumerate()
                .filter(|(_, v)| **v != 0.0)
                .map(|(j, v)| (BUCKETS + j, *v)),
        )
    }

    fn scores(&self, s: &Sample) -> [f32; OUTPUTS] {
        let mut z = self.bias;
        for (row, v) in Trainer::rows(s) {
            let at = row * OUTPUTS;
            for (k, zk) in z.iter_mut().enumerate() {
                *zk += self.w[at + k] * v;
            }
        }
        z
    }

    fn step(&mut self, s: &Sample, set: &Settings) {
        let mut z = self.scores(s);
        let (tasks, levels) = z.split_at_mut(TASK_OUT.len());
        softmax(tasks);
        softmax(levels);
        let mut err = [0f32; OUTPUTS];
        if let Some(t) = s.task {
            for (k, p) in tasks.iter().enumerate() {
                err[k] = p - f32::from(u8::from(k == t));
            }
        }
        if let Some(l) = s.level {
            for (k, p) in levels.iter().enumerate() {
                err[TASK_OUT.len() + k] = p - f32::from(u8::from(k == l));
            }
        }
        for (row, v) in Trainer::rows(s) {
            let at = row * OUTPUTS;
            for (k, e) in err.iter().enumerate() {
                if *e == 0.0 {
                    continue;
                }
                let i = at + k;
                let grad = e * v + set.l2 * self.w[i];
                self.g[i] += grad * grad;
                self.w[i] -= set.lr * grad / (self.g[i].sqrt() + 1e-6);
            }
        }
        for (k, e) in err.iter().enumerate() {
            self.gb[k] += e * e;
            self.bias[k] -= set.lr * e / (self.gb[k].sqrt() + 1e-6);
        }
    }

    fn train(samples: &[&Sample], set: &Settings) -> Trainer {
        let mut t = Trainer::new();
        let mut order: Vec<usize> = (0..samples.len()).collect();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..set.epochs {
            // Fisher-Yates with a fixed xorshift: the same sets give the same model.
            for i in (1..order.len()).rev() {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                order.swap(i, (rng % (i as u64 + 1)) as usize);
            }
            for &i in &order {
                t.step(samples[i], set);
            }
        }
        t
    }

    fn predict(&self, s: &Sample) -> (usize, usize) {
        let z = self.scores(s);
        let (tasks, levels) = z.split_at(TASK_OUT.len());
        (argmax(tasks), argmax(levels))
    }
}

/// Scores of a model on samples it was not trained on.
#[derive(Default)]
struct Score {
    task_ok: usize,
    task_n: usize,
    exact: usize,
    near: usize,
    level_n: usize,
    /// Task confusion, `[want][got]` in `TASK_OUT` order.
    confusion: [[usize; TASK_OUT.len()]; TASK_OUT.len()],
}

impl Score {
    fn add(&mut self, model: &Trainer, samples: &[&Sample]) {
        for s in samples {
            let (t, l) = model.predict(s);
            if let Some(want) = s.task {
                self.task_n += 1;
                self.task_ok += usize::from(t == want);
                if let Some(c) = self.confusion.get_mut(want).and_then(|r| r.get_mut(t)) {
                    *c += 1;
                }
            }
            if let Some(want) = s.level {
                self.level_n += 1;
                self.exact += usize::from(l == want);
                self.near += usize::from(l.abs_diff(want) <= 1);
            }
        }
    }

    fn show(&self, what: &str, set: &Settings) {
        let r = |a: usize, b: usize| a as f64 / b.max(1) as f64;
        println!(
            "{what}, {set:?}: task {:.3} ({}), complexity exact {:.3}, within one {:.3} ({})",
            r(self.task_ok, self.task_n),
            self.task_n,
            r(self.exact, self.level_n),
            r(self.near, self.level_n),
            self.level_n
        );
    }
}

fn cross_validate(samples: &[Sample], folds: usize, set: &Settings) {
    let mut score = Score::default();
    for fold in 0..folds {
        let in_fold = |i: &usize| i % folds == fold;
        let pick = |keep: bool| -> Vec<&Sample> {
            samples
                .iter()
                .enumerate()
                .filter(|(i, _)| in_fold(i) == keep)
                .map(|(_, s)| s)
                .collect()
        };
        let (test, train) = (pick(true), pick(false));
        score.add(&Trainer::train(&train, set), &test);
    }
    score.show(&format!("cv {folds} folds"), set);
}

/// Leave one set out: each set (its own author) is scored by a model trained on all the
/// others, the closest estimate of a new author's prompts without the held-out set.
fn by_set(sets: &[(String, Vec<Sample>)], set: &Settings) {
    let mut pooled = Score::default();
    for (i, (name, test)) in sets.iter().enumerate() {
        let train: Vec<&Sample> = sets
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, (_, s))| s.iter())
            .collect();
        let model = Trainer::train(&train, set);
        let mut score = Score::default();
        let test: Vec<&Sample> = test.iter().collect();
        score.add(&model, &test);
        pooled.add(&model, &test);
        score.show(&format!("  without {name}"), set);
    }
    pooled.show("leave one set out", set);
    let name = |t: &Task| format!("{t:?}").to_lowercase();
    let head: Vec<String> = TASK_OUT
        .iter()
        .map(|t| format!("{:>5.5}", name(t)))
        .collect();
    println!("   want \\ got | {}", head.join(" "));
    for (t, row) in TASK_OUT.iter().zip(&pooled.confusion) {
        let cells: Vec<String> = row.iter().map(|c| format!("{c:>5}")).collect();
        println!("{:>13} | {}", name(t), cells.join(" "));
    }
}

/// The examples of a set file.
fn examples(path: &str) -> Result<Vec<Example>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    Example::parse_set(&text).map_err(|e| format!("{path}: {e}"))
}

/// The bodies of a set, as compact JSON.
fn bodies(path: &str) -> Result<HashSet<String>, String> {
    Ok(examples(path)?
        .iter()
        .map(|ex| ex.body.to_string())
        .collect())
}

/// The samples of a set, without those whose body is in `exclude`.
fn load(path: &str, exclude: &HashSet<String>) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    for ex in examples(path)? {
        if exclude.contains(&ex.body.to_string()) {
            continue;
        }
        if let Some(s) = sample(&ex)? {
            samples.push(s);
        }
    }
    Ok(samples)
}

fn run() -> Result<(), String> {
    let mut set = Settings {
        epochs: 30,
        lr: 0.1,
        l2: 1e-4,
    };
    let (mut out, mut cv, mut test, mut files) = (None, None, None, Vec::new());
    let mut leave_one_out = false;
    let mut exclude = HashSet::new();
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, name: &str| -> Result<f64, String> {
        v.and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{name} needs a number"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = Some(it.next().ok_or("--out needs a file")?),
            "--test" => test = Some(it.next().ok_or("--test needs a set")?),
            "--by-set" => leave_one_out = true,
            "--exclude" => exclude.extend(bodies(&it.next().ok_or("--exclude needs a set")?)?),
            "--cv" => cv = Some(num(it.next(), "--cv")? as usize),
            "--epochs" => set.epochs = num(it.next(), "--epochs")? as usize,
            "--lr" => set.lr = num(it.next(), "--lr")? as f32,
            "--l2" => set.l2 = num(it.next(), "--l2")? as f32,
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            _ => files.push(a),
        }
    }
    if files.is_empty() {
        return Err(USAGE.to_owned());
    }
    if leave_one_out {
        let sets = files
            .iter()
            .map(|path| Ok((path.clone(), load(path, &exclude)?)))
            .collect::<Result<Vec<_>, String>>()?;
        by_set(&sets, &set);
        return Ok(());
    }
    let mut samples = Vec::new();
    for path in &files {
        samples.extend(load(path, &exclude)?);
    }
    if let Some(folds) = cv {
        cross_validate(&samples, folds.max(2), &set);
        return Ok(());
    }
    let refs: Vec<&Sample> = samples.iter().collect();
    let model = Trainer::train(&refs, &set);
    if let Some(path) = test {
        let test = load(&path, &HashSet::new())?;
        let mut score = Score::default();
        score.add(&model, &test.iter().collect::<Vec<_>>());
        score.show(
            &format!("trained on {}, tested on {path}", files.join(" ")),
            &set,
        );
        return Ok(());
    }
    let bytes = Model::encode(&model.w, &model.bias);
    let path = out.ok_or("--out or --cv is needed")?;
    std::fs::write(&path, &bytes).map_err(|e| format!("{path}: {e}"))?;
    println!(
        "wrote {path}: {} bytes, trained on {} examples",
        bytes.len(),
        samples.len()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llm-router-train: {e}");
            ExitCode::from(1)
        }
    }
}
