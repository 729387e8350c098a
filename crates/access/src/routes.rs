//! Routes as the access decision sees them. The upstream a route forwards to belongs to the
//! data plane, so it is a type parameter: the proxy fills it with its pool, and explain never
//! looks at it.

use std::sync::Arc;

use config::HostPattern;
use metrics::RouteMetrics;
use policy::RoutePolicy;

use crate::routing::Router;

/// A route: where it answers, what it requires, and where it forwards (`U`).
pub struct Route<U> {
    pub name: String,
    /// The host pattern the route answers for.
    pub host: HostPattern,
    pub path_prefix: String,
    pub metrics: RouteMetrics,
    pub policy: RoutePolicy,
    /// Group object ids (lower case); the user must be in one. Empty: no check.
    pub groups_any: Arc<[Arc<str>]>,
    /// Send `X-Portcullis-Assertion`.
    pub assertion: bool,
    /// Show the grace-period notice ([`crate::grace`]).
    pub grace_notice: bool,
    /// Open upgraded connections follow their device's posture ([`crate::live`]).
    pub follow_posture: bool,
    pub upstream: U,
}

/// The routing snapshot: replaced whole, read without a lock.
pub struct RouteTable<U> {
    pub router: Router<Route<U>>,
    /// Metrics for requests that matched no route.
    pub unrouted: RouteMetrics,
}

impl<U> crate::routing::Prefixed for Route<U> {
    fn path_prefix(&self) -> &str {
        &self.path_prefix
    }
}
