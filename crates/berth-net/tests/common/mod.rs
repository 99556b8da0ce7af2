//! What the root tests of the pod network and the proxy share: threads living in network
//! namespaces of their own.
#![allow(dead_code)] // Each test binary uses a different part.

use std::path::PathBuf;
use std::sync::mpsc;

/// A thread living in a network namespace of its own; work is sent to it as closures.
pub struct Namespace {
    pub path: PathBuf,
    work: mpsc::Sender<Box<dyn FnOnce() + Send>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Namespace {
    pub fn new() -> Namespace {
        let (path_tx, path_rx) = mpsc::channel();
        let (work, jobs) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let thread = std::thread::spawn(move || {
            // SAFETY: only the network namespace of this thread changes; no file descriptor
            // table or memory is unshared, which is what the unsafety is about.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
                .expect("unshare a network namespace (root needed)");
            let tid = rustix::thread::gettid().as_raw_nonzero();
            path_tx
                .send(PathBuf::from(format!("/proc/self/task/{tid}/ns/net")))
                .expect("send path");
            for job in jobs {
                job();
            }
        });
        let path = path_rx.recv().expect("namespace path");
        // The path names the thread's namespace from this process's view.
        Namespace {
            path,
            work,
            thread: Some(thread),
        }
    }

    /// Runs `f` inside the namespace and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        self.work
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .expect("namespace thread alive");
        rx.recv().expect("namespace thread answered")
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let (dead, _) = mpsc::channel();
        self.work = dead;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
