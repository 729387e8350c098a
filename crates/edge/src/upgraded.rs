//! An upgraded connection's bytes, both ways, until either side ends — or until its device
//! is refused ([`access::live`]): then a WebSocket gets a close frame (1008, policy violation,
//! with the decision's reason) at the next frame boundary of what the upstream sends, so the
//! client never reads half a frame; any other upgraded protocol is closed.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use access::live::{Cut, Registration};

/// How long a cut waits for the upstream's frame in flight to end before closing anyway.
const BOUNDARY_WAIT: Duration = Duration::from_secs(1);

/// A connection that follows its device: the registration (dropped when the connection ends)
/// and where a cut comes from; `websocket`: the upgrade is a WebSocket.
pub struct Following {
    pub registration: Registration,
    pub cut: Cut,
    pub websocket: bool,
}

/// Pipes `down` (the client) and `up` (the upstream) until one ends or `follow` cuts them.
pub async fn pipe<D, U>(mut down: D, mut up: U, follow: Option<Following>) -> std::io::Result<()>
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let Some(mut follow) = follow else {
        return tokio::io::copy_bidirectional(&mut down, &mut up).await.map(|_| ());
    };
    let _registered = follow.registration;
    let (mut down_r, mut down_w) = tokio::io::split(down);
    let (mut up_r, mut up_w) = tokio::io::split(up);
    let to_up = async {
        tokio::io::copy(&mut down_r, &mut up_w).await?;
        up_w.shutdown().await
    };
    let to_down = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut frames = Frames::default();
        let mut cutting: Option<(&'static str, tokio::time::Instant)> = None;
        loop {
            if let Some((reason, _)) = cutting.filter(|_| frames.at_boundary() || !follow.websocket) {
                if follow.websocket {
                    down_w.write_all(&close_frame(reason)).await?;
                }
                down_w.flush().await?;
                return down_w.shutdown().await;
            }
            let deadline = cutting.map(|(_, d)| d);
            tokio::select! {
                read = up_r.read(&mut buf) => {
                    let n = read?;
                    if n == 0 {
                        return down_w.shutdown().await;
                    }
                    down_w.write_all(&buf[..n]).await?;
                    frames.feed(&buf[..n]);
                }
                changed = follow.cut.changed(), if cutting.is_none() => {
                    match (changed, *follow.cut.borrow()) {
                        (Ok(()), Some(reason)) => cutting = Some((reason, tokio::time::Instant::now() + BOUNDARY_WAIT)),
                        // The registry is gone (shutting down): nothing will cut any more.
                        (Err(_), _) | (Ok(()), None) => {}
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    // The upstream is mid-frame and stays so: close without the frame.
                    return down_w.shutdown().await;
                }
            }
        }
    };
    // Either direction ending ends both (as copy_bidirectional would once both were done).
    tokio::select! {
        r = to_up => r,
        r = to_down => r,
    }
}

/// A WebSocket close frame from the server side (unmasked): 1008 and `reason`.
fn close_frame(reason: &str) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut f = Vec::with_capacity(4 + reason.len());
    f.push(0x88);
    f.push(2 + reason.len() as u8);
    f.extend_from_slice(&1008u16.to_be_bytes());
    f.extend_from_slice(reason);
    f
}

/// Where a stream of WebSocket frames stands: in a header (how many of its bytes are in) or in
/// a payload (how many bytes are left).
#[derive(Default)]
struct Frames {
    header: Vec<u8>,
    payload_left: u64,
}

impl Frames {
    fn at_boundary(&self) -> bool {
        self.header.is_empty() && self.payload_left == 0
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = (bytes.len() as u64).min(self.payload_left);
                self.payload_left -= n;
                bytes = &bytes[n as usize..];
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            if let Some(len) = self.header_done() {
                self.header.clear();
                self.payload_left = len;
            }
        }
    }

    /// The payload length once the header is whole.
    fn header_done(&self) -> Option<u64> {
        let h = &self.header;
        if h.len() < 2 {
            return None;
        }
        let masked = h[1] & 0x80 != 0;
        let (ext, len7) = match h[1] & 0x7f {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(u64::from(n))),
        };
        let need = 2 + ext + if masked { 4 } else { 0 };
        if h.len() < need {
            return None;
        }
        Some(match len7 {
            Some(n) => n,
            None => h[2..2 + ext].iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_boundaries_are_found_across_any_split() {
        // A short text frame, a 300-byte binary frame (16-bit length), a masked ping.
        let mut stream = vec![0x81, 3, b'a', b'b', b'c'];
        stream.extend([0x82, 126, 0x01, 0x2c]);
        stream.extend(std::iter::repeat_n(7u8, 300));
        stream.extend([0x89, 0x82, 1, 2, 3, 4, 9, 9]);
        let ends = [5, 5 + 4 + 300, stream.len()];
        for split in 1..stream.len() {
            let mut f = Frames::default();
            let mut seen = Vec::new();
            for (i, chunk) in stream.chunks(split).enumerate() {
                for (j, b) in chunk.iter().enumerate() {
                    f.feed(std::slice::from_ref(b));
                    if f.at_boundary() {
                        seen.push(i * split + j + 1);
                    }
                }
            }
            assert_eq!(seen, ends, "split {split}");
        }
        assert_eq!(close_frame("device_noncompliant")[..4], [0x88, 21, 0x03, 0xf0]);
    }
}
