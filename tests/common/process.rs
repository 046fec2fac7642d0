//! Spawning children that die with the test process.

#![allow(unused_imports)]

use super::*;

pub(crate) type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// All children are forked from one long-lived thread, because PR_SET_PDEATHSIG fires when the
/// *thread* that forked the child exits (test threads and tokio's blocking threads come and go).
pub(crate) fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("harness-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the harness spawner thread");
        Mutex::new(tx)
    })
}

/// Spawns `cmd` so that the kernel SIGKILLs it if this test process dies.
pub fn spawn_tied(mut cmd: Command) -> io::Result<Child> {
    let parent = std::process::id();
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if nix::libc::getppid() as u32 != parent {
                // The test process is already gone.
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    lock(spawner())
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("harness spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("harness spawner thread is gone"))?
}
