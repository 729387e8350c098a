//! Upstream pools for the hyper data plane: round robin over resolved addresses, skipping the
//! backends a request already tried and those the active health check found down. Lock-free on
//! the request path (atomics only); the health check runs as a task of its own.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use std::future::Future;

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
    /// `addr` as a URI authority, made once (a request's upstream URI reuses it).
    authority: http::uri::Authority,
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
                .filter_map(|&addr| {
                    // An address always makes an authority.
                    let authority = http::uri::Authority::try_from(addr.to_string()).ok()?;
                    Some(Backend {
                        addr,
                        authority,
                        healthy: AtomicBool::new(true),
                    })
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

    /// The URI authority of backend `addr`.
    pub fn authority(&self, addr: SocketAddr) -> Option<&http::uri::Authority> {
        self.backends.iter().find(|b| b.addr == addr).map(|b| &b.authority)
    }

    /// One round of checks, every backend at once, each `probe` given `timeout`; logs each
    /// change of state.
    pub async fn check<F, Fut>(&self, probe: &F, timeout: Duration)
    where
        F: Fn(SocketAddr) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let rounds = self.backends.iter().map(|b| async move {
            let up = tokio::time::timeout(timeout, probe(b.addr))
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
    pub async fn run_checks<F, Fut>(
        &self,
        probe: F,
        interval: Duration,
        timeout: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) where
        F: Fn(SocketAddr) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        loop {
            self.check(&probe, timeout).await;
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
        }
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

    #[tokio::test]
    async fn checks_mark_backends_down_and_up_and_a_slow_probe_is_down() {
        let a = addrs(3);
        let pool = Pool::new("app", &a);
        let (up, down, slow) = (a[0], a[1], a[2]);
        let probe = |addr: SocketAddr| async move {
            if addr == slow {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            if addr == down {
                Err("refused".to_string())
            } else {
                Ok(())
            }
        };
        pool.check(&probe, Duration::from_millis(50)).await;
        let state: Vec<bool> = pool
            .backends
            .iter()
            .map(|b| b.healthy.load(Ordering::Relaxed))
            .collect();
        assert_eq!(state, [true, false, false]);
        assert_eq!(pool.pick(&[]), Some(up));
        let all_up = |_: SocketAddr| async { Ok(()) };
        pool.check(&all_up, Duration::from_millis(50)).await;
        let state: Vec<bool> = pool
            .backends
            .iter()
            .map(|b| b.healthy.load(Ordering::Relaxed))
            .collect();
        assert_eq!(state, [true, true, true], "back up once a probe succeeds");
    }
}
