//! A guard for a process a test spawns (the `agent-secret-store` or `agent-secret-proxy`
//! binary): when the test ends, passing or panicking, the process is interrupted as an operator
//! would stop it and killed if it does not exit, so no server outlives its test holding a port,
//! a database or the CI job.

use std::io::BufReader;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How long `Drop` waits after SIGINT before it sends SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// A running child process, stopped on drop.
pub struct Spawned {
    child: Child,
    what: String,
}

impl Spawned {
    /// Spawns `cmd`; panics naming the program if it cannot start.
    pub fn start(cmd: &mut Command) -> Spawned {
        let what = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Spawned { child, what }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its stdout, when the command was given `Stdio::piped()`.
    pub fn take_stdout(&mut self) -> BufReader<ChildStdout> {
        BufReader::new(self.child.stdout.take().expect("stdout is piped"))
    }

    /// Its stderr, when the command was given `Stdio::piped()`.
    pub fn take_stderr(&mut self) -> BufReader<ChildStderr> {
        BufReader::new(self.child.stderr.take().expect("stderr is piped"))
    }

    /// Sends SIGINT (Ctrl-C), the way an operator stops a server in a terminal.
    pub fn interrupt(&self) {
        let sent = signal(self.id(), "INT");
        assert!(sent, "cannot send SIGINT to {} ({})", self.what, self.id());
    }

    /// Its exit status once it has exited, polling until `deadline`; `None` if it still runs.
    pub async fn exited(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + deadline;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if signal(self.id(), "INT") {
            let until = Instant::now() + GRACE;
            while Instant::now() < until {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kill -s SIG pid` through the system's `kill`, so the kit needs no unsafe FFI.
fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}
