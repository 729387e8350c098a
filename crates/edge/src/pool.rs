//! Upstream pools for the hyper data plane: round robin over resolved addresses, skipping the
//! backends a request already tried and those the active health check found down. Lock-free on
//! the request path (atomics only); the health check runs as a task of its own.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How a backend is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A TCP connection is accepted.
    Tcp,
    /// `GET path` answers 2xx or 3xx.
    Http { path: String, host: String },
}

struct Backend {
    addr: SocketAddr,
    healthy: AtomicBool,
}

/// One configured pool.
pub struct Pool {
    pub name: String,
    backends: Box<[Backend]>,
    next: AtomicUsize,
}

impl Pool {
    /// A pool over `addrs` (resolved already), every backend healthy until checked.
    pub fn new(name: impl Into<String>, addrs: &[SocketAddr]) -> Self {
        Self {
            name: name.into(),
            backends: addrs
                .iter()
                .map(|&addr| Backend {
                    addr,
                    healthy: AtomicBool::new(true),
                })
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// How many distinct backends a request may try.
    pub fn size(&self) -> usize {
        self.backends.len()
    }

    /// The next healthy backend this request has not tried; `None` when there is none.
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let n = self.backends.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.backends[(start + i) % n])
            .find(|b| b.healthy.load(Ordering::Relaxed) && !tried.contains(&b.addr))
            .map(|b| b.addr)
    }

    /// One round of checks, every backend at once; logs each change of state.
    pub async fn check(&self, check: &Check, timeout: Duration) {
        let rounds = self.backends.iter().map(|b| async move {
            let up = tokio::time::timeout(timeout, probe(b.addr, check))
                .await
                .unwrap_or(Err("no answer in time".into()));
            let was = b.healthy.swap(up.is_ok(), Ordering::Relaxed);
            match (was, up) {
                (true, Err(why)) => tracing::warn!(pool = %self.name, backend = %b.addr, %why, "backend down"),
                (false, Ok(())) => tracing::info!(pool = %self.name, backend = %b.addr, "backend up again"),
                (true, Ok(())) | (false, Err(_)) => {}
            }
        });
        futures_util::future::join_all(rounds).await;
    }

    /// Checks every `interval` until `stop` turns true.
    pub async fn run_checks(&self, check: Check, interval: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            self.check(&check, interval.min(Duration::from_secs(5))).await;
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

async fn probe(addr: SocketAddr, check: &Check) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let Check::Http { path, host } = check else {
        return Ok(());
    };
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: portcullis-health\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.map_err(|e| e.to_string())?;
    // "HTTP/1.1 200"
    let status = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| head.starts_with(b"HTTP/1."))
        .ok_or("not an HTTP response")?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (1..=n).map(|p| SocketAddr::from(([127, 0, 0, 1], p))).collect()
    }

    #[test]
    fn round_robin_skips_what_was_tried_and_what_is_down() {
        let a = addrs(3);
        let pool = Pool::new("app", &a);
        let picks: Vec<_> = (0..6).map(|_| pool.pick(&[]).unwrap()).collect();
        assert_eq!(picks, [a[0], a[1], a[2], a[0], a[1], a[2]]);
        for _ in 0..3 {
            assert_ne!(pool.pick(&[a[1]]), Some(a[1]), "a tried backend is skipped");
        }
        assert_eq!(pool.pick(&a), None, "all tried");
        pool.backends[0].healthy.store(false, Ordering::Relaxed);
        pool.backends[2].healthy.store(false, Ordering::Relaxed);
        for _ in 0..4 {
            assert_eq!(pool.pick(&[]), Some(a[1]), "only the healthy one");
        }
        assert_eq!(pool.pick(&[a[1]]), None, "no healthy backend left to try");
    }

    /// A backend answering `status` to every connection.
    async fn answering(status: u16) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn checks_mark_backends_down_and_up() {
        let ok = answering(200).await;
        let failing = answering(500).await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let pool = Pool::new("app", &[ok, failing, closed]);
        let http = Check::Http {
            path: "/healthz".into(),
            host: "app".into(),
        };
        pool.check(&http, Duration::from_secs(2)).await;
        let up: Vec<bool> = pool
            .backends
            .iter()
            .map(|b| b.healthy.load(Ordering::Relaxed))
            .collect();
        assert_eq!(up, [true, false, false]);
        pool.check(&Check::Tcp, Duration::from_secs(2)).await;
        let up: Vec<bool> = pool
            .backends
            .iter()
            .map(|b| b.healthy.load(Ordering::Relaxed))
            .collect();
        assert_eq!(up, [true, true, false], "TCP only asks for a connection");
    }
}
