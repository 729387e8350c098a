//! Bodies on the request path: [`Idle`] bounds the wait for each frame of a streamed body
//! (a client or upstream that stops sending mid-body), and [`ReqBody`] is what goes upstream —
//! nothing, or the client's body streamed through, handed back unsent when the connection to a
//! backend failed so that the request can go to the next one.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// No frame of a body arrived within the allowed time.
#[derive(Debug, thiserror::Error)]
#[error("no body data for {0:?}")]
pub struct IdleTimeout(pub Duration);

/// A body whose every wait for the next frame is bounded by `timeout`. The timer is made the
/// first time a frame is not ready at once, so a body that arrives whole costs nothing.
pub struct Idle<B> {
    inner: B,
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// A frame arrived since the timer was last set.
    fresh: bool,
}

impl<B> Idle<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            timer: None,
            fresh: false,
        }
    }
}

impl<B> Body for Idle<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.fresh = true;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.timeout;
                let timer = match &mut this.timer {
                    Some(t) => {
                        if this.fresh {
                            t.as_mut().reset(deadline);
                        }
                        t
                    }
                    None => this.timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                this.fresh = false;
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(IdleTimeout(this.timeout))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a streamed request body shares with the request path: where it goes back if no frame
/// was sent, whether it was sent whole, and how far it got.
#[derive(Default)]
pub struct Progress {
    unsent: Mutex<Option<Idle<Incoming>>>,
    done: AtomicBool,
    frames: AtomicU64,
}

impl Progress {
    /// The body, if the last try dropped it without sending any of it.
    pub fn take_unsent(&self) -> Option<Idle<Incoming>> {
        self.unsent.lock().ok().and_then(|mut b| b.take())
    }

    /// Every frame was handed to the upstream connection.
    pub fn done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }
}

/// The body sent upstream.
pub enum ReqBody {
    Empty,
    Streamed {
        body: Option<Idle<Incoming>>,
        progress: Arc<Progress>,
        sent_any: bool,
    },
}

impl ReqBody {
    pub fn empty() -> Self {
        Self::Empty
    }

    pub fn streamed(body: Idle<Incoming>, progress: Arc<Progress>) -> Self {
        Self::Streamed {
            body: Some(body),
            progress,
            sent_any: false,
        }
    }
}

impl Drop for ReqBody {
    fn drop(&mut self) {
        if let Self::Streamed {
            body,
            progress,
            sent_any: false,
        } = self
        {
            if let (Some(b), Ok(mut slot)) = (body.take(), progress.unsent.lock()) {
                *slot = Some(b);
            }
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            Self::Empty => Poll::Ready(None),
            Self::Streamed {
                body: None, progress, ..
            } => {
                progress.done.store(true, Ordering::Relaxed);
                Poll::Ready(None)
            }
            Self::Streamed {
                body: Some(b),
                progress,
                sent_any,
            } => {
                let polled = Pin::new(b).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(_))) => {
                        *sent_any = true;
                        progress.frames.fetch_add(1, Ordering::Relaxed);
                    }
                    Poll::Ready(None) => progress.done.store(true, Ordering::Relaxed),
                    Poll::Ready(Some(Err(_))) => *sent_any = true,
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Streamed { body, .. } => body.as_ref().is_none_or(Body::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty | Self::Streamed { body: None, .. } => SizeHint::with_exact(0),
            Self::Streamed { body: Some(b), .. } => b.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out_and_a_flowing_one_does_not() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
        let stream = tokio_stream_from(rx);
        let mut body = Idle::new(StreamBody::new(stream), Duration::from_secs(2));
        let feeder = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"x")))).await.unwrap();
            }
            // Then silence, the sender kept open.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        for _ in 0..5 {
            let f = body.frame().await.unwrap().unwrap();
            assert_eq!(f.into_data().unwrap(), "x", "1.5 s between frames is within 2 s");
        }
        let started = Instant::now();
        let e = body.frame().await.unwrap().unwrap_err();
        assert!(e.is::<IdleTimeout>(), "{e}");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        feeder.abort();
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Unpin {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
