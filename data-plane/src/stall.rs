//! A deadline for a wait on a peer that restarts with every bit of
//! progress: armed when a poll finds the peer not ready, disarmed when it
//! is. One timer, allocated on the first wait and reused after.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

#[derive(Debug)]
pub struct StallTimer {
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl StallTimer {
    pub fn new(timeout: Duration) -> StallTimer {
        StallTimer {
            timeout,
            sleep: None,
            armed: false,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The peer made progress: the next wait starts a new deadline.
    pub fn progress(&mut self) {
        self.armed = false;
    }

    /// The peer is not ready: whether the wait has now lasted the timeout
    /// (else `cx` is woken when it does).
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = Instant::now() + self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            sleep.as_mut().reset(deadline);
            self.armed = true;
        }
        sleep.as_mut().poll(cx).is_ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits until the timer says the wait lasted its timeout.
    async fn expiry(timer: &mut StallTimer) {
        std::future::poll_fn(|cx| {
            if timer.poll_expired(cx) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }

    #[tokio::test]
    async fn a_wait_expires_after_the_timeout_and_progress_restarts_it() {
        let mut timer = StallTimer::new(Duration::from_millis(200));
        let started = std::time::Instant::now();
        expiry(&mut timer).await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
            "{waited:?}"
        );

        timer.progress();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(!timer.poll_expired(&mut cx), "a new wait");
        tokio::time::sleep(Duration::from_millis(150)).await;
        timer.progress();
        let restarted = std::time::Instant::now();
        expiry(&mut timer).await;
        assert!(
            restarted.elapsed() >= Duration::from_millis(200),
            "progress restarted it"
        );
    }
}
