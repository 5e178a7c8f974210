//! The decision log: one JSON object per line for every model decision (`--trace FILE`), so a
//! surprising run can be explained afterwards. Flows hand lines to a writer thread through a
//! bounded queue and never wait for the disk: when the queue is full a line is dropped and
//! counted (`trace_lines_dropped` in the control API's listing).

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};

/// Lines queued for the writer at most.
pub const TRACE_QUEUE_LEN_MAX: usize = 65_536;

/// A JSON Lines decision log.
pub struct Trace {
    lines: Mutex<Option<SyncSender<String>>>,
    dropped: Arc<AtomicU64>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Trace {
    /// Creates (truncates) `file` and starts its writer thread.
    pub fn create(file: &Path) -> std::io::Result<Trace> {
        let out = std::io::BufWriter::new(std::fs::File::create(file)?);
        let (sender, receiver) = sync_channel(TRACE_QUEUE_LEN_MAX);
        let writer = std::thread::Builder::new()
            .name("imlab-proxy-trace".into())
            .spawn(move || write_lines(out, receiver))?;
        Ok(Trace {
            lines: Mutex::new(Some(sender)),
            dropped: Arc::new(AtomicU64::new(0)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Queues one line; drops and counts it when the queue is full.
    pub fn log(&self, line: serde_json::Value) {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let queued = lines
            .as_ref()
            .is_some_and(|sender| sender.try_send(line.to_string()).is_ok());
        if !queued {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Stops taking lines, writes what is queued and flushes the file.
    pub async fn flush(&self) {
        drop(self.lines.lock().unwrap_or_else(|p| p.into_inner()).take());
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
    }
}

/// Writes lines as they come; flushes whenever the queue runs empty, so the file is current
/// while the proxy idles and a killed proxy loses at most what was queued.
fn write_lines(mut out: std::io::BufWriter<std::fs::File>, lines: Receiver<String>) {
    loop {
        let line = match lines.try_recv() {
            Ok(line) => line,
            Err(TryRecvError::Empty) => {
                if out.flush().is_err() {
                    return;
                }
                match lines.recv() {
                    Ok(line) => line,
                    Err(_) => return,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        if writeln!(out, "{line}").is_err() {
            return;
        }
    }
    let _ = out.flush();
}
