//! The watchdog pipe: stdin after the spec line. Its EOF means the library's process has
//! gone, since the kernel closes that process's end however it ends.
//!
//! The thread that reads it starts before the jail: after unshare(CLONE_NEWPID) a process
//! can no longer create threads (clone with CLONE_THREAD fails with EINVAL).

use std::io::Read;

use tokio::sync::oneshot;

/// Resolves when stdin reaches EOF or fails (watched on a thread of its own).
pub fn watch_stdin() -> oneshot::Receiver<()> {
    let (parent_gone, receiver) = oneshot::channel();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 64];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => continue, // nothing else is expected on stdin; ignore it
            }
        }
        eprintln!("boxlite-shim: the library's process is gone (watchdog pipe closed)");
        let _ = parent_gone.send(());
    });
    receiver
}
