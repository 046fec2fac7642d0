//! zkcoordctl.

#![allow(unused_imports)]

use super::*;

/// How long a `zkcoordctl` run may take before the harness kills it and panics.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// A `Command` for `zkcoordctl` with a clean environment for logging; add args and use
/// `run_with_timeout` for anything `ctl`/`ctl_stdin` do not cover (e.g. extra env).
pub fn ctl_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(ctl_bin());
    cmd.args(args).env("NO_COLOR", "1");
    for k in SYSTEMD_ENV {
        cmd.env_remove(k);
    }
    cmd
}

/// Runs `zkcoordctl args...` with empty stdin and returns its output.
pub fn ctl(args: &[&str]) -> Output {
    run_with_timeout(ctl_command(args), b"", CTL_TIMEOUT)
}

/// Runs `zkcoordctl args...` with `input` on stdin.
pub fn ctl_stdin(args: &[&str], input: &[u8]) -> Output {
    run_with_timeout(ctl_command(args), input, CTL_TIMEOUT)
}

/// `ctl` off the async runtime's worker thread.
pub async fn ctl_async(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        ctl(&refs)
    })
    .await
    .expect("ctl task")
}

/// `ctl_stdin` off the async runtime's worker thread.
pub async fn ctl_stdin_async(args: &[&str], input: &[u8]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let input = input.to_vec();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        ctl_stdin(&refs, &input)
    })
    .await
    .expect("ctl task")
}

/// Runs `cmd` with `input` on stdin, capturing stdout/stderr; SIGKILLs it and panics (showing
/// what it printed) after `timeout`.
pub fn run_with_timeout(mut cmd: Command, input: &[u8], timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_tied(cmd).unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
        // stdin is closed when dropped here.
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(r) => r.unwrap_or_else(|e| panic!("waiting for {desc}: {e}")),
        Err(_) => {
            let _ = send_signal(pid, Signal::SIGKILL);
            let out = rx.recv().ok().and_then(|r| r.ok());
            let (o, e) = out
                .map(|o| {
                    (
                        String::from_utf8_lossy(&o.stdout).into_owned(),
                        String::from_utf8_lossy(&o.stderr).into_owned(),
                    )
                })
                .unwrap_or_default();
            panic!("{desc} did not finish within {timeout:?}\nstdout:\n{o}\nstderr:\n{e}");
        }
    };
    let _ = writer.join();
    out
}

/// Lossy stdout + stderr of an `Output`, for assertion messages.
pub fn output_text(o: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        describe_status(&o.status),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
