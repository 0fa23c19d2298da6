//! The receiver as a second process: started by the sender from its own executable, it
//! prints its bound endpoint on stdout as one line and runs until the sender disconnects
//! or closes the receiver's stdin. The sender kills it if anything goes wrong, and a
//! sender that dies closes the pipe, which stops the receiver too.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{RECEIVER, Runtime, measure};
use crate::common::CliError;
use crate::transport::TransportArgs;

/// Longest wait for the receiver to report its endpoint.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the receiver to exit once the measurement is over.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the sender looks whether the receiver has exited.
const EXIT_POLL: Duration = Duration::from_millis(10);

/// A running receiver process; killed when dropped unless it has exited.
pub(crate) struct ReceiverProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    endpoint: String,
}

impl ReceiverProcess {
    /// Starts `snakemq bench --role receiver` and waits for its endpoint.
    pub(crate) async fn spawn(
        bind: &str,
        transport: &TransportArgs,
        runtime: Runtime,
    ) -> Result<Self, CliError> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find this executable to start the receiver: {e}"))?;
        let mut child = Command::new(&exe)
            .args(["bench", "--role", "receiver", "--bind", bind])
            .args(["--runtime", runtime.arg()])
            .args(transport.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the receiver {}: {e}", exe.display()))?;
        let stdout = child.stdout.take();
        let stdin = child.stdin.take();
        // From here on, an early return drops `process`, which kills the child.
        let mut process = ReceiverProcess {
            child,
            stdin,
            endpoint: String::new(),
        };
        let stdout = stdout.ok_or("the receiver has no stdout pipe")?;
        let (tx, rx) = oneshot::channel();
        // std has no async pipes and the runtime is built without process support: one
        // short-lived thread reads the single line.
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(read);
        });
        let line = match tokio::time::timeout(STARTUP_TIMEOUT, rx).await {
            Ok(Ok(Ok(line))) => line,
            Ok(Ok(Err(error))) => return Err(format!("cannot read the receiver: {error}").into()),
            Ok(Err(_)) => return Err("the receiver's reader thread ended".into()),
            Err(_) => return Err("the receiver did not report its endpoint in time".into()),
        };
        let endpoint = line.trim();
        if endpoint.is_empty() {
            return Err("the receiver exited before reporting its endpoint".into());
        }
        process.endpoint = endpoint.to_owned();
        Ok(process)
    }

    /// Where the receiver listens.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Tells the receiver to stop (closes its stdin) and waits for it to exit.
    pub(crate) async fn finish(mut self) -> Result<(), CliError> {
        drop(self.stdin.take());
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("the receiver process failed ({status})").into())
                };
            }
            if Instant::now() >= deadline {
                // Dropping `self` kills it.
                return Err("the receiver process did not exit; killed it".into());
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }
}

impl Drop for ReceiverProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `snakemq bench --role receiver`: listen on `bind`, print the endpoint, serve.
pub(crate) async fn receiver_main(bind: &str, transport: &TransportArgs) -> Result<(), CliError> {
    let messaging = transport.listening(RECEIVER, bind)?.start().await?;
    let endpoint = messaging
        .local_endpoints()
        .first()
        .map(ToString::to_string)
        .ok_or("no listener")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{endpoint}")?;
        out.flush()?;
    }
    let (stop_tx, stop_rx) = oneshot::channel();
    // The sender holds our stdin: end of file means it is done or gone.
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = stop_tx.send(());
    });
    let served = measure::serve(messaging.clone(), stop_rx).await;
    messaging.shutdown().await;
    served.map(drop)
}

/// The receiver in a thread of this process (`--in-process`), with a runtime of its own
/// so that its work is scheduled apart from the sender's, as in another process.
pub(crate) struct ReceiverThread {
    stop: Option<oneshot::Sender<()>>,
    done: oneshot::Receiver<Result<(), String>>,
    endpoint: String,
}

impl ReceiverThread {
    /// Starts the thread and waits for the receiver's endpoint.
    pub(crate) async fn spawn(
        transport: &TransportArgs,
        runtime: Runtime,
    ) -> Result<Self, CliError> {
        let transport = transport.clone();
        let (endpoint_tx, endpoint_rx) = oneshot::channel::<Result<String, String>>();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("bench-receiver".into())
            .spawn(move || {
                let outcome = receiver_thread(&transport, runtime, endpoint_tx, stop_rx)
                    .map_err(|e| e.to_string());
                let _ = done_tx.send(outcome);
            })?;
        let endpoint = match tokio::time::timeout(STARTUP_TIMEOUT, endpoint_rx).await {
            Ok(Ok(Ok(endpoint))) => endpoint,
            Ok(Ok(Err(error))) => return Err(error.into()),
            Ok(Err(_)) => return Err("the receiver thread ended before it listened".into()),
            Err(_) => return Err("the receiver did not start in time".into()),
        };
        Ok(ReceiverThread {
            stop: Some(stop_tx),
            done: done_rx,
            endpoint,
        })
    }

    /// Where the receiver listens.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Stops the receiver and waits for its thread.
    pub(crate) async fn finish(mut self) -> Result<(), CliError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(EXIT_TIMEOUT, &mut self.done).await {
            Ok(Ok(outcome)) => outcome.map_err(Into::into),
            Ok(Err(_)) => Err("the receiver thread panicked".into()),
            Err(_) => Err("the receiver thread did not stop in time".into()),
        }
    }
}

fn receiver_thread(
    transport: &TransportArgs,
    runtime: Runtime,
    endpoint_tx: oneshot::Sender<Result<String, String>>,
    stop: oneshot::Receiver<()>,
) -> Result<(), CliError> {
    let runtime = runtime
        .builder()
        .enable_all()
        .thread_name("bench-receiver")
        .build()?;
    runtime.block_on(async move {
        let builder = transport
            .listening(RECEIVER, "127.0.0.1:0")
            .map_err(|e| e.to_string());
        let started = match builder {
            Ok(builder) => builder.start().await.map_err(|e| e.to_string()),
            Err(error) => Err(error),
        };
        let started = started.and_then(|m| match m.local_endpoints().first() {
            Some(endpoint) => Ok((endpoint.to_string(), m)),
            None => Err("the receiver has no listener".to_owned()),
        });
        let messaging = match started {
            Ok((endpoint, messaging)) => {
                let _ = endpoint_tx.send(Ok(endpoint));
                messaging
            }
            Err(error) => {
                let _ = endpoint_tx.send(Err(error.clone()));
                return Err(error.into());
            }
        };
        let served = measure::serve(messaging.clone(), stop).await;
        messaging.shutdown().await;
        served.map(drop)
    })
}
