//! Command-line arguments, parsed by hand: three words and two options.

/// What to print on a usage error.
pub(crate) const USAGE: &str = "usage: rpc-bench ours|tarpc|paired latency|throughput --calls N \
     [--in-flight K] [--batch B]";

/// The RPC stack under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Harness {
    /// snakemq typed RPC over two `Messaging` peers.
    Ours,
    /// tarpc over its serde TCP transport (bincode).
    Tarpc,
    /// Both, in one process, in alternating batches of calls.
    Paired,
}

impl Harness {
    /// The `harness` field of the JSON line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Harness::Ours => "snakemq-rpc",
            Harness::Tarpc => "tarpc",
            Harness::Paired => "paired",
        }
    }
}

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One call outstanding: round-trip percentiles.
    Latency,
    /// Several calls outstanding: calls per second.
    Throughput,
}

impl Mode {
    /// The `mode` field of the JSON line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Latency => "latency",
            Mode::Throughput => "throughput",
        }
    }
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Args {
    /// The stack under test.
    pub(crate) harness: Harness,
    /// What is measured.
    pub(crate) mode: Mode,
    /// Measured calls (after the warm-up).
    pub(crate) calls: usize,
    /// Calls outstanding in throughput mode.
    pub(crate) in_flight: usize,
    /// Calls per turn of each stack in `paired` runs.
    pub(crate) batch: usize,
}

/// Parses the arguments after the program name.
pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut args = args.into_iter();
    let harness = match args.next().as_deref() {
        Some("ours") => Harness::Ours,
        Some("tarpc") => Harness::Tarpc,
        Some("paired") => Harness::Paired,
        other => return Err(format!("expected ours, tarpc or paired, got {other:?}")),
    };
    let mode = match args.next().as_deref() {
        Some("latency") => Mode::Latency,
        Some("throughput") => Mode::Throughput,
        other => return Err(format!("expected latency or throughput, got {other:?}")),
    };
    let (mut calls, mut in_flight, mut batch) = (None, 64, 500);
    while let Some(option) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{option} needs a value"))?;
        let number: usize = value
            .parse()
            .map_err(|e| format!("{option} {value}: {e}"))?;
        if number == 0 {
            return Err(format!("{option} must be at least 1"));
        }
        match option.as_str() {
            "--calls" => calls = Some(number),
            "--in-flight" => in_flight = number,
            "--batch" => batch = number,
            _ => return Err(format!("unknown option {option}")),
        }
    }
    let calls = calls.ok_or("--calls is required")?;
    Ok(Args {
        harness,
        mode,
        calls,
        in_flight,
        batch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_a_full_line() {
        let args = parse(words("tarpc throughput --calls 20000 --in-flight 8"));
        assert_eq!(
            args,
            Ok(Args {
                harness: Harness::Tarpc,
                mode: Mode::Throughput,
                calls: 20000,
                in_flight: 8,
                batch: 500
            })
        );
    }

    #[test]
    fn in_flight_defaults_to_64() {
        let args = parse(words("ours latency --calls 5"));
        assert_eq!(
            args.map(|a| (a.harness, a.in_flight)),
            Ok((Harness::Ours, 64))
        );
    }

    #[test]
    fn paired_takes_a_batch_size() {
        let args = parse(words("paired latency --calls 20000 --batch 250"));
        assert_eq!(
            args.map(|a| (a.harness, a.batch)),
            Ok((Harness::Paired, 250))
        );
    }

    #[test]
    fn refuses_bad_lines() {
        for line in [
            "",
            "grpc latency --calls 5",
            "ours fast --calls 5",
            "ours latency",
            "ours latency --calls",
            "ours latency --calls 0",
            "ours latency --calls x",
            "ours latency --calls 5 --depth 3",
            "paired latency --calls 5 --batch 0",
        ] {
            assert!(parse(words(line)).is_err(), "{line:?} was accepted");
        }
    }
}
