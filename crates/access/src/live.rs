//! Open upgraded connections (WebSockets) follow their device's posture. Each one a route that
//! enforces a device lets through is registered with what its request was decided on — the
//! route policy, the group check, the device and how it was identified. When the posture cache
//! drops that device's posture (the store's change log says it changed), the connection is
//! decided again by the same [`policy::decide`], on the posture read anew; a refusal cuts it
//! with the decision's reason. Registration happens once per upgrade, never per request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use device::{Lookup, PostureCache};
use policy::{Device, DeviceSource, Facts, Groups, Outcome, RoutePolicy, User};
use tokio::sync::{broadcast, watch};

/// Why an open connection was cut: the reason code of the decision that refused it.
pub type Cut = watch::Receiver<Option<&'static str>>;

struct Entry {
    id: u64,
    policy: RoutePolicy,
    groups: Groups,
    source: DeviceSource,
    cut: watch::Sender<Option<&'static str>>,
}

#[derive(Default)]
pub struct LiveConnections {
    /// By device id. A lock only at an upgrade, its end and a posture change.
    by_device: Mutex<HashMap<Arc<str>, Vec<Entry>>>,
    next: AtomicU64,
}

/// Keeps a connection registered while it lives.
pub struct Registration {
    live: Arc<LiveConnections>,
    device: Arc<str>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.live.lock();
        if let Some(list) = map.get_mut(&self.device) {
            list.retain(|e| e.id != self.id);
            if list.is_empty() {
                map.remove(&self.device);
            }
        }
    }
}

impl LiveConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Vec<Entry>>> {
        // A panic elsewhere mid-update leaves whole entries behind: still usable.
        self.by_device.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The registration an upgrade through a route that enforces a device needs (`None`: the
    /// route does not look at devices, in enforce mode, or no device was identified).
    pub fn register_verdict(self: &Arc<Self>, policy: &RoutePolicy, v: &crate::Verdict) -> Option<(Registration, Cut)> {
        if !crate::decide::needs_device(policy) || policy.mode != policy::Mode::Enforce {
            return None;
        }
        let (device, source) = v.device.as_ref()?;
        Some(self.register(device, *source, *policy, v.groups.unwrap_or(Groups::NotRequired)))
    }

    /// Registers an open connection of `device`, let through under `policy` with `groups`.
    pub fn register(
        self: &Arc<Self>,
        device: &str,
        source: DeviceSource,
        policy: RoutePolicy,
        groups: Groups,
    ) -> (Registration, Cut) {
        let (cut, watch) = watch::channel(None);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let device: Arc<str> = device.to_ascii_lowercase().into();
        self.lock().entry(device.clone()).or_default().push(Entry {
            id,
            policy,
            groups,
            source,
            cut,
        });
        (
            Registration {
                live: self.clone(),
                device,
                id,
            },
            watch,
        )
    }

    /// How many connections are registered.
    pub fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides `device`'s connections again on its posture now; cuts the refused ones.
    pub async fn recheck(&self, device: &str, cache: &PostureCache) {
        let checks: Vec<(u64, RoutePolicy, Groups, DeviceSource)> = match self.lock().get(device) {
            Some(list) => list.iter().map(|e| (e.id, e.policy, e.groups, e.source)).collect(),
            None => return,
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
                if let Some(e) = self.lock().get(device).and_then(|l| l.iter().find(|e| e.id == id)) {
                    let _ = e.cut.send(Some(decision.reason.as_str()));
                }
                tracing::info!(
                    device,
                    reason = decision.reason.as_str(),
                    "open connection cut: its device is refused now"
                );
            }
        }
    }

    fn devices(&self) -> Vec<Arc<str>> {
        self.lock().keys().cloned().collect()
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
