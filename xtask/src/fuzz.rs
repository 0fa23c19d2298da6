//! `cargo xtask fuzz --seconds N`: every cargo-fuzz target in `fuzz/`, N seconds each.
//!
//! Each target starts from the committed seeds in `fuzz/seeds/<target>/` (read only) and
//! keeps what it finds in `fuzz/corpus/<target>/` (ignored by git), so a short run still
//! begins from real handshakes instead of random bytes.

use std::path::{Path, PathBuf};
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

/// The workspace this run was started in, found at run time.
///
/// Not from a compile-time path: an xtask binary built by another checkout that shares the
/// target folder must still work on the tree it was started in. `cargo run` sets
/// `CARGO_MANIFEST_DIR` for the program it starts (xtask's folder, one below the root);
/// without it, the nearest folder above the current one holding `xtask/Cargo.toml` is used.
fn workspace_root() -> Result<PathBuf, String> {
    let is_root = |dir: &Path| {
        dir.join("Cargo.toml").is_file() && dir.join("xtask").join("Cargo.toml").is_file()
    };
    if let Some(manifest_dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        if let Some(root) = Path::new(&manifest_dir).parent().filter(|dir| is_root(dir)) {
            return Ok(root.to_path_buf());
        }
    }
    let cwd = std::env::current_dir()
        .map_err(|err| format!("cannot read the current directory: {err}"))?;
    cwd.ancestors()
        .find(|dir| is_root(dir))
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            format!(
                "no snakemq workspace (a folder with xtask/Cargo.toml) at or above {}",
                cwd.display()
            )
        })
}

/// cargo-fuzz needs nightly flags; `RUSTC_BOOTSTRAP=1` unlocks them on the stable toolchain,
/// which is the only one this project's machines have. It runs inside `fuzz/` and is told
/// so explicitly, whatever the current directory.
fn cargo_fuzz(fuzz_dir: &Path, subcommand: &str) -> Command {
    let mut command = util::cargo();
    command
        .current_dir(fuzz_dir)
        .args(["fuzz", subcommand, "--fuzz-dir"])
        .arg(fuzz_dir)
        .env("RUSTC_BOOTSTRAP", "1");
    command
}

pub(crate) fn run(args: Args) -> Result<(), String> {
    let fuzz_dir = workspace_root()?.join("fuzz");
    if !fuzz_dir.join("Cargo.toml").is_file() {
        eprintln!("xtask fuzz: fuzz/ has no Cargo.toml yet, so there are no fuzz targets to run");
        return Ok(());
    }

    let has_cargo_fuzz = util::cargo()
        .current_dir(&fuzz_dir)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_cargo_fuzz {
        eprintln!("xtask fuzz: cargo-fuzz is missing, installing it");
        util::run(util::cargo().current_dir(&fuzz_dir).args([
            "install",
            "--locked",
            "cargo-fuzz",
        ]))?;
    }

    let listed = cargo_fuzz(&fuzz_dir, "list")
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
        // libFuzzer writes new inputs to the first directory only, so the seeds stay as
        // committed.
        let corpus = fuzz_dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .map_err(|err| format!("cannot create {}: {err}", corpus.display()))?;
        let seeds = fuzz_dir.join("seeds").join(target);
        let mut command = cargo_fuzz(&fuzz_dir, "run");
        command.arg(target).arg(&corpus);
        if seeds.is_dir() {
            command.arg(&seeds);
        } else {
            eprintln!(
                "xtask fuzz: {} does not exist, `{target}` starts from its corpus only",
                seeds.display()
            );
        }
        command
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds));
        util::run(&mut command).map_err(|err| format!("fuzz target `{target}`: {err}"))?;
    }
    eprintln!(
        "xtask fuzz: {} targets ran {} s each without a crash: {}",
        targets.len(),
        args.seconds,
        targets.join(", ")
    );
    Ok(())
}
