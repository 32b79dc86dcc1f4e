//! The runtime layout of the proxy: one single-threaded tokio runtime per
//! CPU ("worker"), each on its own OS thread, holding whole connections.
//!
//! Measured on the proxied path (docs/performance.md): a `current_thread`
//! runtime per core answers ~15 % more requests per CPU second than the
//! work-stealing multi-thread runtime, which pays for its injection queue,
//! atomics and cross-thread wake-ups on every task switch. A connection
//! never leaves its worker: hyper's connection task, its HTTP/2 streams, its
//! upstream connections ([`crate::integration::upstream::Upstreams`] keeps
//! each worker's) and its WebSocket pumps all run there.
//!
//! One listener accepts (on the node's main runtime, beside the config
//! stream, the Redis link and the exporters) and hands each connection to
//! the next worker in turn. Per-worker `SO_REUSEPORT` listeners were the
//! alternative; they let any other process of the same user bind the same
//! port and silently take a share of the traffic, and balance by a hash of
//! the client's address rather than evenly, so Pylon keeps the single
//! listener: the hand-off costs one cross-thread wake-up per connection,
//! not per request.
//!
//! The number of workers defaults to [`std::thread::available_parallelism`],
//! which honours the process's CPU affinity (`taskset`) and cgroup CPU
//! quotas (a container limited to 2 CPUs gets 2 workers).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{mpsc, watch};

thread_local! {
    /// The worker this thread is (1-based); 0 on every other thread.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker running the caller (1..=workers), or 0 outside
/// the workers (the main runtime, tests).
pub fn current() -> usize {
    WORKER.with(Cell::get)
}

/// How many workers to start when the operator did not say: one per CPU
/// this process may use (affinity and cgroup quota), at least 1.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A connection handed to a worker: the future that serves it.
pub type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The running workers.
pub struct Workers {
    queues: Vec<mpsc::UnboundedSender<Job>>,
    next: AtomicUsize,
    threads: Vec<std::thread::JoinHandle<()>>,
    finish: watch::Sender<bool>,
}

/// A worker thread could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start proxy worker {index}: {source}")]
pub struct StartError {
    index: usize,
    source: std::io::Error,
}

impl Workers {
    /// Starts `count` workers (at least 1), named `pylon-worker-N`.
    ///
    /// # Errors
    /// The OS refused a thread or a runtime's I/O driver (out of memory or
    /// file descriptors).
    pub fn start(count: usize) -> Result<Workers, StartError> {
        let (finish, finished) = watch::channel(false);
        let mut queues = Vec::new();
        let mut threads = Vec::new();
        for index in 1..=count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| StartError { index, source })?;
            let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
            let mut finished = finished.clone();
            let thread = std::thread::Builder::new()
                .name(format!("pylon-worker-{index}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(index));
                    runtime.block_on(async move {
                        while let Some(job) = rx.recv().await {
                            tokio::spawn(job);
                        }
                        // No more connections come; the ones held here
                        // run until the node has drained them.
                        let _ = finished.wait_for(|done| *done).await;
                    });
                    // Dropping the runtime cancels what is left after the
                    // drain timeout.
                })
                .map_err(|source| StartError { index, source })?;
            queues.push(tx);
            threads.push(thread);
        }
        Ok(Workers {
            queues,
            next: AtomicUsize::new(0),
            threads,
            finish,
        })
    }

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    /// Always false: there is at least one worker.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Runs `job` (a connection) on the next worker in turn.
    pub fn dispatch(&self, job: Job) {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        // A worker only stops receiving after [`Workers::stop`].
        let _ = self.queues[n].send(job);
    }

    /// Stops taking connections and ends the workers once `drained`
    /// resolves (the node's drain, bounded by its timeout); what is still
    /// running then is cancelled.
    pub async fn stop(self, drained: impl Future<Output = ()>) {
        let Workers {
            queues,
            threads,
            finish,
            ..
        } = self;
        drop(queues);
        drained.await;
        let _ = finish.send(true);
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn connections_go_to_every_worker_in_turn_and_run_there() {
        let workers = Workers::start(2).expect("workers");
        let seen: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
        for _ in 0..10 {
            let seen = seen.clone();
            workers.dispatch(Box::pin(async move {
                seen[current()].fetch_add(1, Ordering::SeqCst);
            }));
        }
        let check = seen.clone();
        workers
            .stop(async move {
                while check.iter().map(|n| n.load(Ordering::SeqCst)).sum::<usize>() < 10 {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            })
            .await;
        assert_eq!(
            seen[0].load(Ordering::SeqCst),
            0,
            "nothing ran outside the workers"
        );
        assert_eq!(seen[1].load(Ordering::SeqCst), 5);
        assert_eq!(seen[2].load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_connection_still_running_at_the_end_of_the_drain_is_cancelled() {
        let workers = Workers::start(1).expect("workers");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        workers.dispatch(Box::pin(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        }));
        workers.stop(async {}).await;
        assert!(rx.await.is_err(), "the pending connection was dropped");
    }
}
