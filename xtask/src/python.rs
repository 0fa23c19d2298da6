//! The Python virtualenv with snakeMQ 1.6 that the interop tests talk to.
//!
//! Tests find the interpreter through `SNAKEMQ_PYTHON`; `ci` exports it, and a developer gets it
//! with `export SNAKEMQ_PYTHON=$(cargo xtask python-env)`. The package comes from PyPI at test
//! set-up time and is never vendored.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::util;

/// The pinned version: the wire protocol we are compatible with.
const SNAKEMQ_REQUIREMENT: &str = "snakemq==1.6";

/// Where the virtualenv lives: `$SNAKEMQ_VENV`, else `$HOME/.cache/snakemq-venv`. It sits outside
/// the work tree so it survives fresh clones on the same machine.
fn venv_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("SNAKEMQ_VENV").filter(|dir| !dir.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .ok_or("HOME is not set, so the virtualenv has no place (set SNAKEMQ_VENV)")?;
    Ok(PathBuf::from(home).join(".cache").join("snakemq-venv"))
}

fn imports_snakemq(python: &PathBuf) -> bool {
    util::succeeds(python, &["-c", "import snakemq"])
}

/// Makes sure the virtualenv exists and can `import snakemq`, creating it and installing
/// `snakemq==1.6` when needed. Returns the interpreter path. Progress goes to stderr so the
/// path alone is on stdout.
pub(crate) fn ensure_python_venv() -> Result<PathBuf, String> {
    let dir = venv_dir()?;
    let python = dir.join("bin").join("python");
    if imports_snakemq(&python) {
        return Ok(python);
    }

    if !util::succeeds(&python, &["-c", "pass"]) {
        let base = std::env::var_os("SNAKEMQ_BASE_PYTHON").unwrap_or_else(|| "python3".into());
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|err| format!("creating {}: {err}", parent.display()))?;
        }
        // --clear: a half-made or broken virtualenv from an earlier attempt is rebuilt.
        let mut create = Command::new(&base);
        create
            .args(["-m", "venv", "--clear"])
            .arg(&dir)
            .stdout(Stdio::null());
        util::run(&mut create).map_err(|err| {
            format!(
                "{err}\ncreating the Python virtualenv needs `python3 -m venv` \
                 (on Debian/Ubuntu: apt-get install python3-venv)"
            )
        })?;
    }

    let mut install = Command::new(&python);
    install
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            SNAKEMQ_REQUIREMENT,
        ])
        .stdout(Stdio::null());
    util::run(&mut install)
        .map_err(|err| format!("{err}\ninstalling {SNAKEMQ_REQUIREMENT} from PyPI failed"))?;

    if imports_snakemq(&python) {
        Ok(python)
    } else {
        Err(format!(
            "{} still cannot `import snakemq` after installing {SNAKEMQ_REQUIREMENT}",
            python.display()
        ))
    }
}
