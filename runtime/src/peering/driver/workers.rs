//! The worker pool: guest code (reducer calls, module compilation) and slow control
//! requests run here, off the I/O thread, and post their results back as commands.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use super::{Command, Inbox};

pub(crate) type Job = Box<dyn FnOnce() -> Command + Send>;

/// A small pool that runs jobs (Wasm calls, compilation) and posts their results to
/// the I/O thread.
pub(crate) struct Workers {
    pub(crate) jobs: Option<mpsc::Sender<Job>>,
    pub(crate) threads: Vec<JoinHandle<()>>,
}

impl Workers {
    pub(crate) fn start(n: usize, inbox: Arc<Inbox>, name: &str) -> std::io::Result<Workers> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        for i in 0..n {
            let (rx, inbox) = (rx.clone(), inbox.clone());
            let thread = thread::Builder::new().name(format!("estate-work-{name}-{i}")).spawn(move || {
                loop {
                    let job = rx.lock().unwrap().recv();
                    let Ok(job) = job else { return };
                    // A closed inbox means the node stopped; the result has no reader.
                    let _ = inbox.send(job());
                }
            })?;
            threads.push(thread);
        }
        Ok(Workers { jobs: Some(tx), threads })
    }

    pub(crate) fn submit(&self, job: impl FnOnce() -> Command + Send + 'static) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Box::new(job));
        }
    }

    pub(crate) fn stop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
