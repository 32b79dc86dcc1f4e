//! The node's own log on stderr, written by a thread of its own.
//!
//! tracing's formatter hands each line to [`Stderr`], which queues it
//! (at most [`QUEUE_LINES`]) for the `pylon-log` thread to write. A stderr
//! that stalls — a pipe nobody reads, a slow terminal — then costs log
//! lines, counted and reported once it moves again, never a runtime thread:
//! a node whose stderr is a full pipe still drains at its first signal.
//! A stderr whose reader is gone (every write fails with `EPIPE`) costs
//! only the lines.
//!
//! Not `tracing_appender::non_blocking`: when its queue is full at exit its
//! guard prints a complaint on stdout, where the access log's lines go.

use std::io::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// Lines waiting for stderr at most; past it, new lines are dropped and
/// counted.
pub const QUEUE_LINES: usize = 16_384;

/// How long a node's exit waits for its queued log lines to be written.
pub const EXIT_FLUSH: Duration = Duration::from_secs(2);

/// How often, at most, the writer reports dropped lines (and looks for
/// them while no line comes).
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The queue between the formatter and the writer thread.
struct Queue {
    lines: SyncSender<Vec<u8>>,
    /// Lines queued and not yet written (or failed).
    pending: AtomicUsize,
    /// Lines dropped because the queue was full.
    dropped: AtomicU64,
}

static QUEUE: OnceLock<Queue> = OnceLock::new();

/// Starts the writer thread; from then on [`Stderr`] and [`say`] queue
/// their lines. Without it (or if the OS refuses the thread, reported on
/// stderr) they write to stderr directly.
pub fn start() {
    let (lines, queued) = std::sync::mpsc::sync_channel(QUEUE_LINES);
    let queue = Queue {
        lines,
        pending: AtomicUsize::new(0),
        dropped: AtomicU64::new(0),
    };
    if QUEUE.set(queue).is_err() {
        return;
    }
    if let Err(e) = std::thread::Builder::new()
        .name("pylon-log".into())
        .spawn(move || write_lines(queued))
    {
        // Nothing takes the lines: they are dropped (and counted) instead
        // of written. Said once, directly.
        eprintln!("cannot start the log writer ({e}): log lines are dropped");
    }
}

std::thread_local! {
    /// Whether this thread is the writer: its own lines (the dropped-lines
    /// warning) go to stderr directly, not behind a full queue.
    static WRITER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The writer thread: each line to stderr as it comes, and a warning (in
/// the log's own format, at most once per [`REPORT_EVERY`]) when lines were
/// dropped since the last one.
fn write_lines(queued: Receiver<Vec<u8>>) {
    let Some(queue) = QUEUE.get() else { return };
    WRITER.set(true);
    let mut reported = 0;
    let mut last_report: Option<Instant> = None;
    loop {
        let line = match queued.recv_timeout(REPORT_EVERY) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if let Some(line) = line {
            // Errors (EPIPE: the reader is gone) cost the line, nothing more.
            let _ = std::io::stderr().write_all(&line);
            queue.pending.fetch_sub(1, Ordering::Release);
        }
        let dropped = queue.dropped.load(Ordering::Relaxed);
        if dropped > reported && last_report.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
            last_report = Some(Instant::now());
            tracing::warn!(
                lines = dropped - reported,
                "log lines dropped: stderr did not take them fast enough"
            );
            reported = dropped;
        }
    }
}

/// Queues `line`, or drops and counts it when the queue is full; hands it
/// back when there is no writer thread ([`start`] not called).
fn enqueue(line: Vec<u8>) -> Result<(), Vec<u8>> {
    let Some(queue) = QUEUE.get() else {
        return Err(line);
    };
    queue.pending.fetch_add(1, Ordering::Acquire);
    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = queue.lines.try_send(line) {
        queue.pending.fetch_sub(1, Ordering::Release);
        queue.dropped.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Writes `text` (a whole line or lines, newline included) to stderr after
/// the log lines already queued, without waiting for it.
pub fn say(text: &str) {
    if let Err(text) = enqueue(text.as_bytes().to_vec()) {
        let _ = std::io::stderr().write_all(&text);
    }
}

/// Waits until every queued line is written, at most `timeout`. `false`
/// if some were not (stderr stalled): they are lost when the process exits.
pub fn flush(timeout: Duration) -> bool {
    let Some(queue) = QUEUE.get() else {
        return true;
    };
    let deadline = Instant::now() + timeout;
    while queue.pending.load(Ordering::Acquire) > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// tracing's writer for the node's log: one [`Line`] per event, queued
/// when the formatter is done with it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(Vec::new())
    }
}

/// One event's formatted bytes, queued when dropped.
#[derive(Debug)]
pub struct Line(Vec<u8>);

impl std::io::Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let line = std::mem::take(&mut self.0);
        if line.is_empty() {
            return;
        }
        if WRITER.get() {
            let _ = std::io::stderr().write_all(&line);
        } else if let Err(line) = enqueue(line) {
            let _ = std::io::stderr().write_all(&line);
        }
    }
}
