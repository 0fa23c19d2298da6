//! Interleaved rounds of benchmark harnesses that print one JSON line each (`rpc-bench`,
//! `transport-bench`, Python scripts): every run is printed as it happens, its figures are
//! collected per (harness, JSON field), and a harness that fails once is left out of the
//! later rounds and named under the table.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::bench::{group_digits, json_number, last_json_line};
use crate::util;

/// A harness run must finish within this, or it counts as failed.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// One measured figure: (harness, JSON field).
pub(crate) type Key = (&'static str, &'static str);

/// The figures of every round so far.
pub(crate) struct Rounds {
    results: BTreeMap<Key, Vec<f64>>,
    broken: BTreeMap<&'static str, String>,
    /// Whether a figure must be above zero to count (rates, latencies).
    positive: bool,
}

impl Rounds {
    /// No figures yet; `positive` refuses figures that are zero or negative.
    pub(crate) fn new(positive: bool) -> Self {
        Rounds {
            results: BTreeMap::new(),
            broken: BTreeMap::new(),
            positive,
        }
    }

    /// Runs `command` for `harness` in round `round` of `rounds` (unless the harness failed
    /// before) and records the JSON `fields` of its last JSON line.
    pub(crate) fn measure(
        &mut self,
        round: usize,
        rounds: usize,
        harness: &'static str,
        mut command: Command,
        fields: &[&'static str],
    ) {
        if self.broken.contains_key(harness) {
            return;
        }
        eprint!("round {round}/{rounds}: {} ... ", util::describe(&command));
        let positive = self.positive;
        let outcome = util::run_with_timeout(&mut command, RUN_TIMEOUT, false).and_then(|out| {
            let line = last_json_line(&out.stdout).ok_or("no JSON line")?;
            fields
                .iter()
                .map(|field| {
                    json_number(line, field)
                        .filter(|v| v.is_finite() && (!positive || *v > 0.0))
                        .map(|v| (*field, v))
                        .ok_or_else(|| format!("no {field} in `{line}`"))
                })
                .collect::<Result<Vec<_>, String>>()
        });
        match outcome {
            Ok(values) => {
                let shown: Vec<String> = values
                    .iter()
                    .map(|(field, v)| format!("{field} {}", group_digits(*v)))
                    .collect();
                eprintln!("{}", shown.join(", "));
                for (field, value) in values {
                    self.results
                        .entry((harness, field))
                        .or_default()
                        .push(value);
                }
            }
            Err(err) => {
                eprintln!("failed\n{err}");
                self.broken.insert(harness, err);
            }
        }
    }

    /// Every round's value of every figure.
    pub(crate) fn results(&self) -> &BTreeMap<Key, Vec<f64>> {
        &self.results
    }

    /// Lines naming the harnesses left out and why, for under a table.
    pub(crate) fn notes(&self) -> String {
        self.broken
            .iter()
            .map(|(harness, err)| {
                format!(
                    "\nnote: {harness} left out:\n    {}\n",
                    err.replace('\n', "\n    ")
                )
            })
            .collect()
    }
}
