//! The node's own log on stderr, written by a thread of its own.
//!
//! tracing's formatter hands each line to [`Stderr`], which queues it for
//! the `pylon-log` thread to write. A stderr that stalls — a pipe nobody
//! reads, a blocked terminal — then costs log lines, never a runtime
//! thread: a node whose stderr is a full pipe still drains at its first
//! signal. A stderr whose reader is gone (every write fails with `EPIPE`)
//! costs only the lines.
//!
//! The queue holds at most [`QUEUE_LINES`] lines and [`QUEUE_BYTES`] bytes.
//! Past either, the *oldest* lines make room: what a node says last (why it
//! stops, its `error: …`) is what an operator needs when stderr comes back.
//! The writer says how many went missing with a warning where they would
//! have been, written whatever `PYLON_LOG` keeps.
//!
//! Panic messages go through the queue too ([`start`] installs the hook):
//! the default hook writes to stderr itself and would wait behind a stalled
//! writer, the Raft thread's exit 70 with it.
//!
//! Not `tracing_appender::non_blocking`: it drops the newest lines, and when
//! its queue is full at exit its guard prints a complaint on stdout, where
//! the access log's lines go.

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Lines waiting for stderr at most; past it, the oldest are dropped.
pub const QUEUE_LINES: usize = 16_384;

/// Bytes waiting for stderr at most (4 MiB); past it, the oldest lines are
/// dropped. A line logs at most a request's head (64 KiB), so this bounds
/// what a client can make the node hold while stderr stalls.
pub const QUEUE_BYTES: usize = 4 * 1024 * 1024;

/// How long a node's exit waits for its queued log lines to be written.
pub const EXIT_FLUSH: Duration = Duration::from_secs(2);

/// How often, at most, the writer reports dropped lines while lines keep
/// coming (always when the queue runs dry).
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// How long a panicking thread waits for its message to be written: the
/// process may end right after (an abort, a panic in `main`).
const PANIC_WAIT: Duration = Duration::from_secs(1);

/// The queue between the formatter and the writer thread.
struct Queue {
    state: Mutex<State>,
    /// Signalled when a line is queued.
    queued: Condvar,
    /// Signalled when a line is written and when the queue runs dry.
    progress: Condvar,
}

#[derive(Default)]
struct State {
    lines: VecDeque<Vec<u8>>,
    /// The bytes of `lines`.
    bytes: usize,
    /// Lines ever queued: the last one's number.
    queued: u64,
    /// Lines ever written or dropped. Lines leave the queue in order, so
    /// line `n` is done once `done >= n`.
    done: u64,
    /// Whether the writer is writing the dropped-lines warning.
    reporting: bool,
    /// Lines dropped since the last warning.
    dropped: u64,
}

impl Queue {
    fn new() -> Queue {
        Queue {
            state: Mutex::new(State::default()),
            queued: Condvar::new(),
            progress: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; were it poisoned, the
        // queue is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `line` for the writer, first dropping (and counting) the
    /// oldest lines until it fits within `max_lines` and `max_bytes`; a
    /// line alone is always queued. Returns its number.
    fn push(&self, line: Vec<u8>, max_lines: usize, max_bytes: usize) -> u64 {
        let mut state = self.lock();
        while !state.lines.is_empty()
            && (state.lines.len() >= max_lines || state.bytes + line.len() > max_bytes)
        {
            if let Some(oldest) = state.lines.pop_front() {
                state.bytes -= oldest.len();
                state.dropped += 1;
                state.done += 1;
            }
        }
        state.bytes += line.len();
        state.lines.push_back(line);
        state.queued += 1;
        let number = state.queued;
        drop(state);
        self.queued.notify_one();
        number
    }

    /// Waits until line `number` is written or dropped and, if `warning`,
    /// a pending dropped-lines warning with nothing queued after it is
    /// written too; at most `timeout`. `false` if not.
    fn wait(&self, number: u64, warning: bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            let warning_due = state.reporting || (state.dropped > 0 && state.lines.is_empty());
            if state.done >= number && !(warning && warning_due) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .progress
                .wait_timeout(state, left)
                .map_or_else(|e| e.into_inner().0, |(state, _)| state);
        }
    }
}

/// Set once the writer thread runs.
static QUEUE: OnceLock<&'static Queue> = OnceLock::new();

std::thread_local! {
    /// Whether this thread is the writer: its own lines (the dropped-lines
    /// warning, a panic) go to stderr directly, not into its own queue.
    static WRITER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Starts the writer thread and routes panic messages through it; from then
/// on [`Stderr`] and [`say`] queue their lines. Before it, or if the OS
/// refuses the thread (said on stderr), they write to stderr directly.
pub fn start() {
    if QUEUE.get().is_some() {
        return;
    }
    let queue: &'static Queue = Box::leak(Box::new(Queue::new()));
    match std::thread::Builder::new()
        .name("pylon-log".into())
        .spawn(move || write_lines(queue))
    {
        Ok(_) => {
            let _ = QUEUE.set(queue);
            std::panic::set_hook(Box::new(move |panic| {
                let thread = std::thread::current();
                let name = thread.name().unwrap_or("<unnamed>");
                let backtrace = std::backtrace::Backtrace::capture();
                let text = match backtrace.status() {
                    std::backtrace::BacktraceStatus::Captured => {
                        format!("\nthread '{name}' {panic}\nstack backtrace:\n{backtrace}\n")
                    }
                    _ => format!("\nthread '{name}' {panic}\n"),
                };
                if WRITER.get() {
                    let _ = std::io::stderr().write_all(text.as_bytes());
                } else {
                    match enqueue(text.into_bytes()) {
                        Ok(number) => {
                            queue.wait(number, false, PANIC_WAIT);
                        }
                        Err(text) => {
                            let _ = std::io::stderr().write_all(&text);
                        }
                    }
                }
            }));
        }
        Err(e) => eprintln!("cannot start the log writer ({e}): writing to stderr directly"),
    }
}

/// The writer thread: the queued lines to stderr in order, and a warning
/// saying how many were dropped: before the first line after the gap, or
/// (while lines keep going missing) at most once per [`REPORT_EVERY`],
/// counting every gap since the last one.
fn write_lines(queue: &'static Queue) {
    WRITER.set(true);
    let mut last_report: Option<Instant> = None;
    let mut state = queue.lock();
    loop {
        let report = state.dropped > 0
            && (state.lines.is_empty() || last_report.is_none_or(|at| at.elapsed() >= REPORT_EVERY));
        if report {
            let lines = std::mem::take(&mut state.dropped);
            state.reporting = true;
            drop(state);
            last_report = Some(Instant::now());
            // In the log's own format; written directly (WRITER).
            tracing::warn!(lines, "log lines dropped: stderr did not take them fast enough");
            state = queue.lock();
            state.reporting = false;
            queue.progress.notify_all();
            continue;
        }
        match state.lines.pop_front() {
            Some(line) => {
                state.bytes -= line.len();
                drop(state);
                // Errors (EPIPE: the reader is gone) cost the line, nothing more.
                let _ = std::io::stderr().write_all(&line);
                state = queue.lock();
                state.done += 1;
                queue.progress.notify_all();
            }
            None => {
                state = queue
                    .queued
                    .wait_timeout(state, REPORT_EVERY)
                    .map_or_else(|e| e.into_inner().0, |(state, _)| state);
            }
        }
    }
}

/// Queues `line` ([`Queue::push`] within [`QUEUE_LINES`] and
/// [`QUEUE_BYTES`]) and returns its number; hands it back when there is no
/// writer thread.
fn enqueue(line: Vec<u8>) -> Result<u64, Vec<u8>> {
    let Some(queue) = QUEUE.get() else {
        return Err(line);
    };
    Ok(queue.push(line, QUEUE_LINES, QUEUE_BYTES))
}

/// Writes `text` (a whole line or lines, newline included) to stderr after
/// the log lines already queued, without waiting for it.
pub fn say(text: &str) {
    if WRITER.get() {
        let _ = std::io::stderr().write_all(text.as_bytes());
    } else if let Err(text) = enqueue(text.as_bytes().to_vec()) {
        let _ = std::io::stderr().write_all(&text);
    }
}

/// Waits until the lines queued so far (and a dropped-lines warning
/// due after them) are written, at most `timeout`; lines queued meanwhile
/// are not waited for. `false` if some were not (stderr stalled): they
/// are lost when the process exits.
pub fn flush(timeout: Duration) -> bool {
    let Some(queue) = QUEUE.get() else {
        return true;
    };
    let last = queue.lock().queued;
    queue.wait(last, true, timeout)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(queue: &Queue) -> Vec<String> {
        let state = queue.lock();
        state
            .lines
            .iter()
            .map(|line| String::from_utf8_lossy(line).into_owned())
            .collect()
    }

    #[test]
    fn a_full_queue_drops_its_oldest_lines_and_counts_them() {
        let queue = Queue::new();
        for n in 1..=5 {
            queue.push(format!("line {n}\n").into_bytes(), 3, 1024);
        }
        assert_eq!(queue.lock().dropped, 2);
        assert_eq!(queued(&queue), ["line 3\n", "line 4\n", "line 5\n"]);
    }

    #[test]
    fn a_queue_holds_no_more_bytes_than_its_bound_but_always_the_newest_line() {
        let queue = Queue::new();
        for n in 1..=4 {
            queue.push(vec![b'a' + n; 10], 100, 25);
        }
        assert_eq!(queue.lock().bytes, 20);
        assert_eq!(queue.lock().dropped, 2);
        queue.push(vec![b'z'; 40], 100, 25);
        assert_eq!(queued(&queue), ["z".repeat(40)], "a line larger than the bound");
        assert_eq!(queue.lock().bytes, 40);
        assert_eq!(queue.lock().dropped, 4);
    }

    #[test]
    fn a_dropped_line_counts_as_done_and_a_queued_one_is_waited_for() {
        let queue = Queue::new();
        let first = queue.push(b"first\n".to_vec(), 1, 1024);
        let second = queue.push(b"second\n".to_vec(), 1, 1024);
        assert!(queue.wait(first, false, Duration::ZERO), "dropped for the second");
        assert!(
            !queue.wait(second, false, Duration::from_millis(20)),
            "no writer here"
        );
    }
}
