//! Open upgraded connections (WebSockets) follow their device's posture and their browser
//! session. Each one a route that enforces a device or a signed-in user lets through is
//! registered with what its request was decided on — the route policy, the group check, the
//! device and how it was identified, the session. When the posture cache drops that device's
//! posture (the store's change log says it changed), the connection is decided again by the
//! same [`policy::decide`], on the posture read anew; a refusal cuts it with the decision's
//! reason. A connection opened with a browser session is cut (`session_ended`) once the session
//! ends — signed out, on this node or another, or past its lifetime — checked every
//! [`SESSION_CHECK`]. Registration happens once per upgrade, never per request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use device::{Lookup, PostureCache};
use identity::{CurrentIdentity, Identity};
use policy::{Device, DeviceSource, Facts, Groups, Outcome, RoutePolicy, User};
use tokio::sync::{broadcast, watch};

/// How often the sessions of open connections are looked at (through the session cache, so
/// a sign-out on another node is seen within that cache's lifetime more).
pub const SESSION_CHECK: Duration = Duration::from_secs(1);
/// The reason an open connection whose session ended is cut with.
pub const SESSION_ENDED: &str = "session_ended";

/// Why an open connection was cut: the reason code of the decision that refused it.
pub type Cut = watch::Receiver<Option<&'static str>>;

struct Entry {
    policy: RoutePolicy,
    groups: Groups,
    /// The device it was let through with, and how it was identified (`None`: the route does
    /// not look at devices).
    device: Option<(Arc<str>, DeviceSource)>,
    session: Option<Arc<str>>,
    cut: watch::Sender<Option<&'static str>>,
}

#[derive(Default)]
struct Registry {
    entries: HashMap<u64, Entry>,
    by_device: HashMap<Arc<str>, Vec<u64>>,
}

#[derive(Default)]
pub struct LiveConnections {
    /// A lock only at an upgrade, its end, a posture change and the session check.
    registry: Mutex<Registry>,
    next: AtomicU64,
}

/// Keeps a connection registered while it lives.
pub struct Registration {
    live: Arc<LiveConnections>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut r = self.live.lock();
        let Some(e) = r.entries.remove(&self.id) else { return };
        if let Some((device, _)) = e.device {
            if let Some(ids) = r.by_device.get_mut(&device) {
                ids.retain(|i| *i != self.id);
                if ids.is_empty() {
                    r.by_device.remove(&device);
                }
            }
        }
    }
}

impl LiveConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic elsewhere mid-update leaves whole entries behind: still usable.
        self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The registration an upgrade through an enforcing route needs: one that enforces a
    /// device (followed by its posture) or a request that came with a browser session
    /// (followed by the session). `None`: nothing to follow.
    pub fn register_verdict(self: &Arc<Self>, policy: &RoutePolicy, v: &crate::Verdict) -> Option<(Registration, Cut)> {
        if policy.mode != policy::Mode::Enforce {
            return None;
        }
        let device = if crate::decide::needs_device(policy) {
            v.device.as_ref().map(|(d, s)| (d.as_str(), *s))
        } else {
            None
        };
        if device.is_none() && v.session.is_none() {
            return None;
        }
        Some(self.register(
            device,
            v.session.as_deref().map(Arc::from),
            *policy,
            v.groups.unwrap_or(Groups::NotRequired),
        ))
    }

    /// Registers an open connection of `device` and `session`, let through under `policy`
    /// with `groups`.
    pub fn register(
        self: &Arc<Self>,
        device: Option<(&str, DeviceSource)>,
        session: Option<Arc<str>>,
        policy: RoutePolicy,
        groups: Groups,
    ) -> (Registration, Cut) {
        let (cut, watch) = watch::channel(None);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let device = device.map(|(d, s)| (Arc::<str>::from(d.to_ascii_lowercase()), s));
        let mut r = self.lock();
        if let Some((d, _)) = &device {
            r.by_device.entry(d.clone()).or_default().push(id);
        }
        r.entries.insert(
            id,
            Entry {
                policy,
                groups,
                device,
                session,
                cut,
            },
        );
        drop(r);
        (Registration { live: self.clone(), id }, watch)
    }

    /// How many connections are registered.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides `device`'s connections again on its posture now; cuts the refused ones.
    pub async fn recheck(&self, device: &str, cache: &PostureCache) {
        let checks: Vec<(u64, RoutePolicy, Groups, DeviceSource)> = {
            let r = self.lock();
            let Some(ids) = r.by_device.get(device) else { return };
            ids.iter()
                .filter_map(|id| {
                    let e = r.entries.get(id)?;
                    Some((*id, e.policy, e.groups, e.device.as_ref()?.1))
                })
                .collect()
        };
        let lookup = cache.lookup(device).await;
        let now = base::time::unix_now();
        for (id, policy, groups, source) in checks {
            let device_fact = match &lookup {
                Ok(Lookup::Found(p)) => Device::Identified {
                    source,
                    posture: Some(p),
                },
                Ok(Lookup::Unknown) => Device::Identified { source, posture: None },
                // The store away: a request would be refused (fail closed), but an open
                // connection is not cut for an outage it had no part in; the next change is.
                Err(_) => continue,
            };
            let decision = policy::decide(
                &policy,
                &Facts {
                    user: User::Authenticated,
                    groups,
                    device: device_fact,
                    now,
                },
            );
            if let Outcome::Deny(_) = decision.outcome {
                self.cut(id, decision.reason.as_str());
                tracing::info!(
                    device,
                    reason = decision.reason.as_str(),
                    "open connection cut: its device is refused now"
                );
            }
        }
    }

    fn cut(&self, id: u64, reason: &'static str) {
        if let Some(e) = self.lock().entries.get(&id) {
            let _ = e.cut.send(Some(reason));
        }
    }

    fn devices(&self) -> Vec<Arc<str>> {
        self.lock().by_device.keys().cloned().collect()
    }

    /// Cuts the connections whose browser session has ended. A session that cannot be read
    /// (the store away) is not taken for ended: the connection stays, as for a posture.
    pub async fn check_sessions(&self, identity: &Identity) {
        let mut by_session: HashMap<Arc<str>, Vec<u64>> = HashMap::new();
        for (id, e) in &self.lock().entries {
            // Once cut, a connection is on its way out: not again.
            if let (Some(s), None) = (&e.session, *e.cut.borrow()) {
                by_session.entry(s.clone()).or_default().push(*id);
            }
        }
        let now = base::time::unix_now();
        for (sid, ids) in by_session {
            let ended = match identity.sessions.get(&sid).await {
                Ok(Some(s)) => now.saturating_sub(s.signed_in_at) > identity.session_lifetime.as_secs(),
                Ok(None) => true,
                Err(identity::session::SessionsUnavailable) => false,
            };
            if ended {
                for id in &ids {
                    self.cut(*id, SESSION_ENDED);
                }
                tracing::info!(
                    connections = ids.len(),
                    "open connections cut: their browser session ended"
                );
            }
        }
    }
}

/// Looks at the sessions of open connections every [`SESSION_CHECK`] until `shutdown`.
pub async fn follow_sessions(
    live: Arc<LiveConnections>,
    identity: Arc<CurrentIdentity>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(SESSION_CHECK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => live.check_sessions(&identity.load()).await,
            _ = shutdown.changed() => return,
        }
    }
}

/// Follows the posture cache's invalidations until `shutdown`, deciding the open connections
/// of each changed device again.
pub async fn follow(live: Arc<LiveConnections>, cache: Arc<PostureCache>, mut shutdown: watch::Receiver<bool>) {
    let mut changes = cache.changes();
    loop {
        let changed = tokio::select! {
            c = changes.recv() => c,
            _ = shutdown.changed() => return,
        };
        let devices = match changed {
            Ok(Some(device)) => vec![device],
            // Every device, or more changes than were kept: every open connection.
            Ok(None) | Err(broadcast::error::RecvError::Lagged(_)) => live.devices(),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        for d in devices {
            live.recheck(&d, &cache).await;
        }
    }
}
