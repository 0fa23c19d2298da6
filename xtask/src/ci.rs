//! `cargo xtask ci`: everything a change must pass, in order, stopping at the first failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{python, util};

/// How long one example may run before it counts as hung.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Extra `cargo test` runs beyond `cargo test --workspace`, one argument list each. A crate with
/// optional features gets a run with them on; add lines here as crates grow features.
fn extra_test_runs() -> Vec<Vec<String>> {
    let mut runs = Vec::new();
    if let Some(features) = facade_feature_args() {
        let mut args = vec!["test".to_string(), "-p".into(), "snakemq".into()];
        args.extend(features);
        runs.push(args);
    }
    // The RocksDB backend and its conformance suite. Its C++ build takes ~20 minutes on a
    // fresh machine (then the target folder keeps it); `.ci/run` installs libclang-dev and
    // a C++ compiler for it.
    runs.push(
        ["test", "-p", "snakemq-storage", "--features", "rocksdb"]
            .map(String::from)
            .to_vec(),
    );
    // The conformance suite's million-message case for every backend (ignored in the
    // default run for its ~2 minutes in a debug build).
    runs.push(
        [
            "test",
            "-p",
            "snakemq-storage",
            "--features",
            "rocksdb",
            "--test",
            "conformance",
            "--",
            "--ignored",
        ]
        .map(String::from)
        .to_vec(),
    );
    runs
}

/// `--features full` when the facade defines `full` (which deliberately leaves out `rocksdb`,
/// whose C++ build would dominate CI), else `--all-features` when it has any features at all.
fn facade_feature_args() -> Option<Vec<String>> {
    let manifest =
        std::fs::read_to_string(util::workspace_root().join("snakemq").join("Cargo.toml")).ok()?;
    let features = manifest_features(&manifest);
    if features.iter().any(|name| name == "full") {
        Some(vec!["--features".into(), "full".into()])
    } else if features.iter().any(|name| name != "default") {
        Some(vec!["--all-features".into()])
    } else {
        None
    }
}

/// Feature names declared in a manifest's `[features]` table (a line scan is enough for ours).
fn manifest_features(manifest: &str) -> Vec<String> {
    let mut in_features = false;
    let mut names = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_features = line == "[features]";
        } else if in_features {
            if let Some((name, _)) = line.split_once('=') {
                let name = name.trim();
                if !name.is_empty() && !name.starts_with('#') {
                    names.push(name.to_string());
                }
            }
        }
    }
    names
}

/// One named step with its outcome, for the summary.
struct Report {
    passed: Vec<(String, Duration)>,
    started: Instant,
}

impl Report {
    fn step(
        &mut self,
        name: &str,
        action: impl FnOnce() -> Result<(), String>,
    ) -> Result<(), String> {
        eprintln!("\n==> xtask ci: {name}");
        let started = Instant::now();
        match action() {
            Ok(()) => {
                self.passed.push((name.to_string(), started.elapsed()));
                Ok(())
            }
            Err(err) => {
                self.print_passed();
                Err(format!(
                    "step `{name}` failed after {} steps passed:\n{err}",
                    self.passed.len()
                ))
            }
        }
    }

    fn print_passed(&self) {
        eprintln!("\n==> xtask ci: summary");
        for (name, took) in &self.passed {
            eprintln!("    ok  {:>6.1} s  {name}", took.as_secs_f64());
        }
    }
}

pub(crate) fn run() -> Result<(), String> {
    let mut report = Report {
        passed: Vec::new(),
        started: Instant::now(),
    };

    report.step("cargo fmt --check", || {
        util::run(util::cargo().args(["fmt", "--all", "--", "--check"]))
            .map_err(|err| format!("{err}\nrun `cargo fmt --all` and commit the result"))
    })?;
    report.step("cargo clippy", || {
        util::run(util::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;

    let mut interpreter = PathBuf::new();
    report.step("python interop virtualenv", || {
        interpreter = python::ensure_python_venv()?;
        eprintln!("SNAKEMQ_PYTHON={}", interpreter.display());
        Ok(())
    })?;

    report.step("cargo test --workspace", || {
        util::run(
            util::cargo()
                .args(["test", "--workspace"])
                .env("SNAKEMQ_PYTHON", &interpreter),
        )
    })?;
    for args in extra_test_runs() {
        let name = format!("cargo {}", args.join(" "));
        report.step(&name, || {
            util::run(
                util::cargo()
                    .args(&args)
                    .env("SNAKEMQ_PYTHON", &interpreter),
            )
        })?;
    }

    report.step("cargo doc", || {
        util::run(
            util::cargo()
                .args(["doc", "--workspace", "--no-deps"])
                .env("RUSTDOCFLAGS", "-D warnings"),
        )
    })?;

    let examples = example_names(&util::workspace_root().join("examples").join("examples"))?;
    report.step("examples", || run_examples(&examples, &interpreter))?;

    report.print_passed();
    eprintln!(
        "xtask ci: all {} steps succeeded in {:.0} s ({} examples ran)",
        report.passed.len(),
        report.started.elapsed().as_secs_f64(),
        examples.len()
    );
    Ok(())
}

/// Example names: `examples/examples/NAME.rs` and `examples/examples/NAME/main.rs`, sorted.
fn example_names(dir: &Path) -> Result<Vec<String>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(format!("reading {}: {err}", dir.display())),
    };
    let mut names = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|err| format!("reading {}: {err}", dir.display()))?
            .path();
        let is_example = if path.is_dir() {
            path.join("main.rs").is_file()
        } else {
            path.extension().is_some_and(|ext| ext == "rs")
        };
        if let (true, Some(stem)) = (is_example, path.file_stem()) {
            names.push(stem.to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Builds all examples first (so compile time does not eat into the timeout), then runs each;
/// every one must exit 0 on its own within [`EXAMPLE_TIMEOUT`].
fn run_examples(names: &[String], interpreter: &Path) -> Result<(), String> {
    if names.is_empty() {
        eprintln!("no examples in examples/examples yet");
        return Ok(());
    }
    util::run(util::cargo().args(["build", "-p", "examples", "--examples"]))?;
    let mut failures = Vec::new();
    for name in names {
        let mut command: Command = util::cargo();
        command
            .args(["run", "--quiet", "-p", "examples", "--example", name])
            .env("SNAKEMQ_PYTHON", interpreter);
        eprintln!("$ {}", util::describe(&command));
        let started = Instant::now();
        match util::run_with_timeout(&mut command, EXAMPLE_TIMEOUT, true) {
            Ok(output) => {
                print!("{}", output.stdout);
                eprintln!(
                    "example {name}: ok in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
            Err(err) => {
                eprintln!("example {name}: FAILED: {err}");
                failures.push(name.clone());
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("examples failed: {}", failures.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::manifest_features;

    #[test]
    fn reads_feature_names() {
        let manifest = "[package]\nname = \"x\"\n\n[features]\ndefault = [\"tcp\"]\ntcp = []\n\
                        # note\nfull = [\"tcp\"]\n\n[dependencies]\nbytes = \"1\"\n";
        assert_eq!(manifest_features(manifest), ["default", "tcp", "full"]);
    }
}
