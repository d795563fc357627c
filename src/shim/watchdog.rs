//! The watchdog pipe: stdin after the spec line. Its EOF means the library's process has
//! gone, since the kernel closes that process's end however it ends.

use std::io::Read;

/// Calls `on_parent_gone` (on a thread of its own) when stdin reaches EOF or fails.
pub fn watch_stdin(on_parent_gone: impl FnOnce() + Send + 'static) {
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
        on_parent_gone();
    });
}
