//! The client's request body: read with a deadline between bytes, cut at
//! the payload limit, and — when it fails — the client's fault, never the
//! backend's. A body that stalls answers 408, one that is malformed
//! (a bad chunk) or cut short 400, one the client abandoned (an HTTP/2
//! stream reset, a connection reset) is recorded as 499 (nginx's "client
//! closed request"; the client is no longer there to read it).
//!
//! The body streams to the backend through [`ClientBody`]; when it fails,
//! its [`Fault`] tells [`crate::integration::http`] why, whatever the
//! backend protocol made of the broken stream.

use crate::error::{BoxError, GatewayError};
use crate::stall::StallTimer;
use bytes::{Bytes, BytesMut};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

/// The default wait for the next bytes of a body (`--body-read-timeout-s`).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a client's body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// No bytes for the body read timeout.
    #[error("no body bytes for {0:?}")]
    Stalled(Duration),
    /// Still arriving when the integration's timeout ran out: the backend
    /// was waiting for the client.
    #[error("the body was still arriving after {0:?}")]
    TooSlow(Duration),
    /// Over the payload limit.
    #[error("body over {limit} bytes")]
    TooLarge { limit: u64 },
    /// Framing that is not HTTP (a bad chunk size or extension).
    #[error("malformed body framing")]
    Malformed(#[source] BoxError),
    /// The body ended before its declared length.
    #[error("body cut short")]
    Incomplete(#[source] BoxError),
    /// The client reset the stream or the connection.
    #[error("the client abandoned the request")]
    Abandoned(#[source] BoxError),
}

impl From<ClientBodyError> for GatewayError {
    fn from(error: ClientBodyError) -> GatewayError {
        match error {
            ClientBodyError::TooLarge { limit } => GatewayError::BodyTooLarge { limit },
            other => GatewayError::ClientBody(other),
        }
    }
}

/// Tells hyper's errors from a client's body apart: an HTTP/2 reset or a
/// broken connection is the client leaving, an early end of the body is
/// a body cut short, anything else hyper could not parse is malformed.
fn classify(error: hyper::Error) -> ClientBodyError {
    type Make = fn(BoxError) -> ClientBodyError;
    let mut make: Option<Make> = None;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if e.downcast_ref::<h2::Error>()
            .is_some_and(|h2| h2.is_reset() || h2.is_io())
        {
            make = Some(ClientBodyError::Abandoned);
            break;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            make = Some(match io.kind() {
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => {
                    ClientBodyError::Malformed
                }
                std::io::ErrorKind::UnexpectedEof => ClientBodyError::Incomplete,
                _ => ClientBodyError::Abandoned,
            });
            break;
        }
        source = e.source();
    }
    let make = make.unwrap_or(if error.is_parse() {
        ClientBodyError::Malformed
    } else {
        ClientBodyError::Incomplete
    });
    make(Box::new(error))
}

/// Why the body failed, once it did, and whether it is still being waited
/// for; shared with whoever watches the call it feeds.
#[derive(Clone, Debug, Default)]
pub struct Fault(Arc<FaultState>);

#[derive(Debug, Default)]
struct FaultState {
    error: Mutex<Option<ClientBodyError>>,
    /// The last read found the client had not sent the next bytes yet.
    waiting_on_client: AtomicBool,
    complete: AtomicBool,
}

impl Fault {
    fn set(&self, error: ClientBodyError) {
        let mut slot = self.0.error.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert(error);
    }

    /// The failure, if the body failed.
    pub fn take(&self) -> Option<ClientBodyError> {
        self.0.error.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Whether the body is incomplete because the client has not sent it
    /// (rather than because nobody read it).
    pub fn client_still_sending(&self) -> bool {
        !self.0.complete.load(Ordering::Relaxed) && self.0.waiting_on_client.load(Ordering::Relaxed)
    }
}

/// What a consumer of [`ClientBody`] sees when it fails; the reason is in
/// its [`Fault`].
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed")]
pub struct BodyFailed;

/// A client's body with a deadline between frames and the payload limit.
pub struct ClientBody {
    inner: Incoming,
    stall: StallTimer,
    read: u64,
    limit: u64,
    fault: Fault,
    failed: bool,
}

impl ClientBody {
    /// `timeout` between frames; at most `limit` bytes.
    pub fn new(inner: Incoming, timeout: Duration, limit: u64) -> ClientBody {
        ClientBody {
            inner,
            stall: StallTimer::new(timeout),
            read: 0,
            limit,
            fault: Fault::default(),
            failed: false,
        }
    }

    pub fn fault(&self) -> Fault {
        self.fault.clone()
    }

    /// The body as received, for a reader with limits of its own.
    pub fn into_inner(self) -> Incoming {
        self.inner
    }

    fn fail(&mut self, error: ClientBodyError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.fault.set(error);
        self.failed = true;
        Poll::Ready(Some(Err(Box::new(BodyFailed))))
    }

    /// The whole body.
    ///
    /// # Errors
    /// [`GatewayError::BodyTooLarge`] over the limit, else
    /// [`GatewayError::ClientBody`] with why it could not be read.
    pub async fn read_whole(mut self) -> Result<Bytes, GatewayError> {
        let mut whole = BytesMut::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut self).poll_frame(cx)).await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        whole.extend_from_slice(&data);
                    }
                }
                Err(failed) => {
                    let why = self.fault.take().unwrap_or(ClientBodyError::Incomplete(failed));
                    return Err(why.into());
                }
            }
        }
        Ok(whole.freeze())
    }
}

impl hyper::body::Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.stall.progress();
                this.fault.0.waiting_on_client.store(false, Ordering::Relaxed);
                if this.inner.is_end_stream() {
                    this.fault.0.complete.store(true, Ordering::Relaxed);
                }
                if let Some(data) = frame.data_ref() {
                    this.read += data.len() as u64;
                    if this.read > this.limit {
                        let limit = this.limit;
                        return this.fail(ClientBodyError::TooLarge { limit });
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(classify(e)),
            Poll::Ready(None) => {
                this.fault.0.complete.store(true, Ordering::Relaxed);
                Poll::Ready(None)
            }
            Poll::Pending => {
                this.fault.0.waiting_on_client.store(true, Ordering::Relaxed);
                if this.stall.poll_expired(cx) {
                    let timeout = this.stall.timeout();
                    return this.fail(ClientBodyError::Stalled(timeout));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
