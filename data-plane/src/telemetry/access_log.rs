//! Access logs: one line per request of an API stage, in the stage's
//! compiled format ([`AccessLogFormat`]), written the way nginx writes
//! `access_log … buffer=64k flush=1s`: each line is rendered straight into
//! a shared buffer, and a writer thread writes the buffer out when it holds
//! [`BATCH`] bytes or once a second — a slow disk, terminal or pipe never
//! holds a request. At most [`QUEUED`] full batches wait for the writer;
//! past that, batches are dropped and their lines counted
//! (`pylon.access_log.dropped`). Lines also go out as OTLP log records
//! when that sink is on. A process that exits without its orderly
//! shutdown (a second signal) first has every writer write its buffer
//! ([`flush_all`]).

use crate::config::access_log::AccessLogFormat;
use crate::context::RequestContext;
use opentelemetry::logs::{AnyValue, LogRecord, Logger, Severity};
use opentelemetry::trace::TraceContextExt;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// A batch is handed to the writer when the buffer holds this many bytes.
pub const BATCH: usize = 64 * 1024;
/// Full batches waiting for the writer, at most.
pub const QUEUED: usize = 16;
/// The buffer is written out at least this often.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// At shutdown, the writer gets this long to write the last lines; a
/// writer stuck on a pipe nobody reads is then left behind (its lines are
/// lost) so that the process can exit.
pub const FINAL_FLUSH: Duration = Duration::from_secs(2);
/// How long [`flush_all`] waits, in all, for the writers.
pub const EXIT_FLUSH: Duration = Duration::from_secs(1);

/// Every running writer's queue, for [`flush_all`]; weak, so that an
/// access log's own shutdown still closes its queue.
static WRITERS: Mutex<Vec<Weak<SyncSender<Job>>>> = Mutex::new(Vec::new());

/// Where the lines go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LineSink {
    /// No lines (OTLP records may still be on).
    #[default]
    Off,
    Stdout,
    /// Appended to this file (created if missing).
    File(std::path::PathBuf),
}

pub struct AccessLog {
    lines: Option<Lines>,
    otlp: Option<opentelemetry_sdk::logs::SdkLogger>,
    /// Lines dropped because the writer fell behind.
    pub dropped: Arc<AtomicU64>,
}

/// The line sink: the shared buffer and its writer thread.
struct Lines {
    buffer: Arc<Mutex<Batch>>,
    /// `None` once shut down.
    full: Option<Arc<SyncSender<Job>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Says when the writer finished (behind a mutex only to be `Sync`).
    done: Mutex<Receiver<()>>,
}

#[derive(Default)]
struct Batch {
    text: String,
    lines: u64,
}

/// What the writer thread is handed.
enum Job {
    /// A full batch.
    Batch(Batch),
    /// Write the buffer now, then say so ([`flush_all`]).
    Flush(std::sync::mpsc::Sender<()>),
}

impl AccessLog {
    /// Starts the line writer for `sink` (a file that cannot be opened is
    /// an error) and keeps `otlp` for log records.
    ///
    /// # Errors
    /// The file cannot be opened for appending, or the writer thread
    /// cannot start.
    pub fn start(
        sink: &LineSink,
        otlp: Option<opentelemetry_sdk::logs::SdkLogger>,
    ) -> std::io::Result<AccessLog> {
        let dropped = Arc::new(AtomicU64::new(0));
        let out: Option<Box<dyn Write + Send>> = match sink {
            LineSink::Off => None,
            // A descriptor of its own: the writer never holds the stdout
            // lock, which `exit` takes to flush (a writer blocked on a full
            // pipe would otherwise block the process's exit).
            LineSink::Stdout => {
                use std::os::fd::AsFd;
                let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
                Some(Box::new(std::fs::File::from(fd)))
            }
            LineSink::File(path) => Some(Box::new(
                std::fs::OpenOptions::new().create(true).append(true).open(path)?,
            )),
        };
        let lines = match out {
            None => None,
            Some(out) => {
                let buffer = Arc::new(Mutex::new(Batch::default()));
                let (full, queue) = std::sync::mpsc::sync_channel::<Job>(QUEUED);
                let (finished, done) = std::sync::mpsc::channel();
                let writer = {
                    let buffer = buffer.clone();
                    std::thread::Builder::new()
                        .name("access-log".into())
                        .spawn(move || {
                            write_batches(out, queue, buffer);
                            let _ = finished.send(());
                        })?
                };
                let full = Arc::new(full);
                if let Ok(mut writers) = WRITERS.lock() {
                    writers.retain(|w| w.strong_count() > 0);
                    writers.push(Arc::downgrade(&full));
                }
                Some(Lines {
                    buffer,
                    full: Some(full),
                    writer: Some(writer),
                    done: Mutex::new(done),
                })
            }
        };
        Ok(AccessLog { lines, otlp, dropped })
    }

    pub fn is_on(&self) -> bool {
        self.lines.is_some() || self.otlp.is_some()
    }

    /// Writes the request's line; how many lines were dropped doing so (a
    /// full batch the writer had no room for).
    pub fn write(&self, format: &AccessLogFormat, ctx: &RequestContext) -> u64 {
        let mut lost = 0;
        if let Some(logger) = &self.otlp {
            let mut log = logger.create_log_record();
            log.set_severity_number(Severity::Info);
            log.set_severity_text("INFO");
            log.set_event_name("pylon.access");
            log.add_attribute("pylon.api", opentelemetry::StringValue::from(ctx.api_id.clone()));
            log.add_attribute("pylon.stage", opentelemetry::StringValue::from(ctx.stage.clone()));
            log.add_attribute("http.response.status_code", i64::from(ctx.outcome.status));
            if let Some(cx) = &ctx.trace {
                let context = cx.span().span_context().clone();
                log.set_trace_context(context.trace_id(), context.span_id(), Some(context.trace_flags()));
            }
            log.set_body(AnyValue::from(format.render(ctx)));
            logger.emit(log);
        }
        if let Some(lines) = &self.lines {
            let full = {
                let Ok(mut batch) = lines.buffer.lock() else {
                    return 1;
                };
                if batch.text.capacity() == 0 {
                    batch.text.reserve(BATCH + 4096);
                }
                format.write(ctx, &mut batch.text);
                batch.text.push('\n');
                batch.lines += 1;
                (batch.text.len() >= BATCH).then(|| std::mem::take(&mut *batch))
            };
            if let (Some(batch), Some(queue)) = (full, &lines.full) {
                let count = batch.lines;
                match queue.try_send(Job::Batch(batch)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                        self.dropped.fetch_add(count, Ordering::Relaxed);
                        lost = count;
                    }
                }
            }
        }
        lost
    }
}

impl Drop for AccessLog {
    /// Hands the last lines to the writer and waits up to [`FINAL_FLUSH`]
    /// for it to write them.
    fn drop(&mut self) {
        if let Some(lines) = &mut self.lines {
            // Closing the queue ends the writer once it wrote what is
            // queued and what is buffered.
            lines.full = None;
            let done = lines.done.get_mut().map(|done| done.recv_timeout(FINAL_FLUSH));
            match done {
                Ok(Ok(()) | Err(RecvTimeoutError::Disconnected)) | Err(_) => {
                    if let Some(writer) = lines.writer.take() {
                        let _ = writer.join();
                    }
                }
                Ok(Err(RecvTimeoutError::Timeout)) => {
                    tracing::warn!(
                        "the access-log writer is blocked (a pipe nobody reads, a stalled disk); exiting without its last lines"
                    );
                }
            }
        }
    }
}

/// Has every access log of this process write the lines its buffer holds
/// (after the full batches queued before them), waiting up to `timeout` in
/// all: for a process that exits without its orderly shutdown, which
/// would have written them (a second SIGTERM or SIGINT). Lines of requests
/// still in flight are not written; a writer blocked on a pipe nobody
/// reads is waited for no longer than `timeout`.
pub fn flush_all(timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let writers: Vec<Arc<SyncSender<Job>>> = WRITERS
        .lock()
        .map(|writers| writers.iter().filter_map(Weak::upgrade).collect())
        .unwrap_or_default();
    let mut acks = Vec::new();
    for writer in writers {
        let (ack, acked) = std::sync::mpsc::channel();
        let mut job = Job::Flush(ack);
        loop {
            match writer.try_send(job) {
                Ok(()) => {
                    acks.push(acked);
                    break;
                }
                // Its queue is full: it is writing; room comes as it does.
                Err(TrySendError::Full(again)) if Instant::now() < deadline => {
                    job = again;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => break,
            }
        }
    }
    for acked in acks {
        let _ = acked.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

/// The writer thread: full batches as they come, the buffer once a second
/// or when asked ([`flush_all`]), everything when the queue closes.
fn write_batches(mut out: Box<dyn Write + Send>, queue: Receiver<Job>, buffer: Arc<Mutex<Batch>>) {
    let mut failed = false;
    let mut write = |text: &str| {
        if text.is_empty() {
            return;
        }
        let result = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        match result {
            Err(e) if !failed => {
                failed = true;
                tracing::warn!(error = %e, "cannot write access-log lines; they are lost until writing works again");
            }
            Ok(()) if failed => {
                failed = false;
                tracing::info!("access-log lines are written again");
            }
            _ => {}
        }
    };
    let take = |buffer: &Mutex<Batch>| {
        buffer
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default()
    };
    loop {
        match queue.recv_timeout(FLUSH_EVERY) {
            Ok(Job::Batch(batch)) => write(&batch.text),
            Ok(Job::Flush(done)) => {
                write(&take(&buffer).text);
                let _ = done.send(());
            }
            Err(RecvTimeoutError::Timeout) => write(&take(&buffer).text),
            Err(RecvTimeoutError::Disconnected) => {
                write(&take(&buffer).text);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn request(path: &'static str) -> RequestContext {
        let mut ctx = RequestContext::new(
            "pets".into(),
            "prod".into(),
            "d-1".into(),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        );
        ctx.uri = http::Uri::from_static(path);
        ctx.outcome.status = 200;
        ctx
    }

    /// An access log writing to a file of a new temporary directory (kept
    /// as long as the directory is).
    fn log_to_file() -> (tempfile::TempDir, std::path::PathBuf, AccessLog) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("access.log");
        let log = AccessLog::start(&LineSink::File(path.clone()), None).unwrap_or_else(|e| panic!("{e}"));
        (dir, path, log)
    }

    #[test]
    fn lines_reach_the_file_in_batches_and_all_of_them_on_shutdown() {
        let (_dir, path, log) = log_to_file();
        let format = AccessLogFormat::compile("$context.httpMethod $context.path $context.status");
        let lines = 3 * BATCH / 20;
        for _ in 0..lines {
            assert_eq!(log.write(&format, &request("/prod/pets/7")), 0);
        }
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(text.lines().count(), lines);
        assert!(text.lines().all(|l| l == "GET /prod/pets/7 200"));
    }

    #[test]
    fn an_exit_without_shutdown_first_has_the_buffered_lines_written() {
        let (_dir, path, log) = log_to_file();
        let format = AccessLogFormat::compile("$context.path");
        log.write(&format, &request("/prod/one"));
        log.write(&format, &request("/prod/two"));
        // Well within the writer's one-second interval.
        flush_all(EXIT_FLUSH);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(text, "/prod/one\n/prod/two\n");
        // The log goes on, and its own shutdown still writes the rest.
        log.write(&format, &request("/prod/three"));
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(text, "/prod/one\n/prod/two\n/prod/three\n");
    }

    #[test]
    fn an_idle_buffer_is_written_within_the_flush_interval() {
        let (_dir, path, log) = log_to_file();
        assert_eq!(
            log.write(&AccessLogFormat::default_json(), &request("/prod/one")),
            0
        );
        std::thread::sleep(FLUSH_EVERY * 2 + Duration::from_millis(200));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(text.contains("\"path\":\"/prod/one\""), "{text}");
        drop(log);
    }
}
