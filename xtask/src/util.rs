//! Running commands: the workspace paths, step-by-step execution with clear failure messages,
//! and timeouts that also end the grandchildren (`cargo run` spawns the real program).

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The workspace root: xtask lives one folder below it.
///
/// Derived at run time (cargo sets `CARGO_MANIFEST_DIR` for `cargo run`, and the current
/// folder is searched upwards otherwise): a binary built in another checkout that shares the
/// target folder must not work on that other checkout.
pub(crate) fn workspace_root() -> PathBuf {
    let is_root = |dir: &Path| {
        dir.join("Cargo.toml").is_file() && dir.join("xtask").join("Cargo.toml").is_file()
    };
    if let Some(manifest_dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        if let Some(root) = Path::new(&manifest_dir).parent().filter(|dir| is_root(dir)) {
            return root.to_path_buf();
        }
    }
    if let Ok(cwd) = std::env::current_dir() {
        if let Some(root) = cwd.ancestors().find(|dir| is_root(dir)) {
            return root.to_path_buf();
        }
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target folder, honouring `CARGO_TARGET_DIR` as cargo does.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// The cargo that started us (cargo sets `CARGO` for `cargo run`), or the one on `PATH`.
pub(crate) fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(program);
    command.current_dir(workspace_root());
    command
}

/// Shell-like rendering of a command for messages.
pub(crate) fn describe(command: &Command) -> String {
    let mut text = String::new();
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            text.push_str(&format!(
                "{}={} ",
                key.to_string_lossy(),
                value.to_string_lossy()
            ));
        }
    }
    let program = Path::new(command.get_program())
        .file_name()
        .unwrap_or(command.get_program());
    text.push_str(&program.to_string_lossy());
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs a command with inherited stdio; a non-zero exit is an error naming the command.
pub(crate) fn run(command: &mut Command) -> Result<(), String> {
    let shown = describe(command);
    eprintln!("$ {shown}");
    let status = command
        .status()
        .map_err(|err| format!("could not start `{shown}`: {err}"))?;
    check_status(&shown, status)
}

fn check_status(shown: &str, status: ExitStatus) -> Result<(), String> {
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed ({status})"))
    }
}

/// What a command printed, when it succeeded.
pub(crate) struct Output {
    pub(crate) stdout: String,
}

/// Runs a command with a deadline, stdout captured (stderr passes through when `show_stderr`,
/// else it is captured and returned in the error). On timeout the whole process group is killed,
/// so a program started by `cargo run` does not outlive its cargo.
pub(crate) fn run_with_timeout(
    command: &mut Command,
    timeout: Duration,
    show_stderr: bool,
) -> Result<Output, String> {
    let shown = describe(command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if show_stderr {
            Stdio::inherit()
        } else {
            Stdio::piped()
        })
        .process_group(0);
    let mut child = command
        .spawn()
        .map_err(|err| format!("could not start `{shown}`: {err}"))?;

    // Drain the pipes on threads so a chatty child never blocks on a full pipe.
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);

    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= timeout => {
                kill_group(child.id());
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(err) => return Err(format!("waiting for `{shown}`: {err}")),
        }
    };
    let stdout = stdout.map(join).unwrap_or_default();
    let stderr = stderr.map(join).unwrap_or_default();
    match status {
        None => Err(format!(
            "`{shown}` did not finish within {} s and was killed{}",
            timeout.as_secs(),
            tail(&stderr)
        )),
        Some(status) if status.success() => Ok(Output { stdout }),
        Some(status) => Err(format!("`{shown}` failed ({status}){}", tail(&stderr))),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn join(handle: std::thread::JoinHandle<String>) -> String {
    handle.join().unwrap_or_default()
}

/// The last lines of captured stderr, for an error message.
fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let start = lines.len().saturating_sub(15);
    let last = lines.get(start..).unwrap_or_default();
    if last.is_empty() {
        String::new()
    } else {
        format!("; its last output:\n{}", last.join("\n"))
    }
}

/// Kills a process group with the system `kill` (no libc binding, so no `unsafe`).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// True if `program` can be started with `args` and exits 0 (output discarded).
pub(crate) fn succeeds(program: impl AsRef<OsStr>, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
