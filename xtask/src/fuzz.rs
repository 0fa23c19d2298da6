//! `cargo xtask fuzz --seconds N`: every cargo-fuzz target in `fuzz/`, N seconds each.

use std::process::Command;

use crate::util;

/// Parsed arguments of `fuzz`.
pub(crate) struct Args {
    seconds: u64,
}

pub(crate) fn parse_args(rest: &[String]) -> Result<Args, String> {
    let mut seconds = 60;
    let mut iter = rest.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = iter.next().ok_or("--seconds needs a value")?;
                seconds = value
                    .parse()
                    .map_err(|_| format!("--seconds: `{value}` is not a whole number"))?;
            }
            other => {
                return Err(format!(
                    "unknown argument `{other}` (usage: fuzz --seconds N)"
                ));
            }
        }
    }
    Ok(Args { seconds })
}

/// cargo-fuzz needs nightly flags; `RUSTC_BOOTSTRAP=1` unlocks them on the stable toolchain,
/// which is the only one this project's machines have.
fn cargo_fuzz() -> Command {
    let mut command = util::cargo();
    command.arg("fuzz").env("RUSTC_BOOTSTRAP", "1");
    command
}

pub(crate) fn run(args: Args) -> Result<(), String> {
    let fuzz_dir = util::workspace_root().join("fuzz");
    if !fuzz_dir.join("Cargo.toml").is_file() {
        eprintln!("xtask fuzz: fuzz/ has no Cargo.toml yet, so there are no fuzz targets to run");
        return Ok(());
    }

    let has_cargo_fuzz = cargo_fuzz()
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_cargo_fuzz {
        eprintln!("xtask fuzz: cargo-fuzz is missing, installing it");
        util::run(util::cargo().args(["install", "--locked", "cargo-fuzz"]))?;
    }

    let listed = cargo_fuzz()
        .arg("list")
        .output()
        .map_err(|err| format!("could not run `cargo fuzz list`: {err}"))?;
    if !listed.status.success() {
        return Err(format!(
            "`cargo fuzz list` failed: {}",
            String::from_utf8_lossy(&listed.stderr).trim()
        ));
    }
    let targets: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect();
    if targets.is_empty() {
        eprintln!("xtask fuzz: fuzz/ has no targets yet (cargo fuzz list is empty)");
        return Ok(());
    }

    for target in &targets {
        eprintln!("\n==> xtask fuzz: {target} for {} s", args.seconds);
        util::run(cargo_fuzz().args([
            "run",
            target,
            "--",
            &format!("-max_total_time={}", args.seconds),
        ]))
        .map_err(|err| format!("fuzz target `{target}`: {err}"))?;
    }
    eprintln!(
        "xtask fuzz: {} targets ran {} s each without a crash: {}",
        targets.len(),
        args.seconds,
        targets.join(", ")
    );
    Ok(())
}
