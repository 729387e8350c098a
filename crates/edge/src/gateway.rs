//! The request path: the [`serve::Handler`] every worker calls.
//!
//! Order per request: limits → the gateway's own endpoints → route → access decision
//! ([`access::Access`]) → header hygiene and verified identity headers → a backend of the pool,
//! with connect failover and the idempotent-retry rule → the response streamed back → one
//! access-and-decision log line and the route's metrics when the response body ends
//! ([`AccessLog`]). Shared state is an immutable [`RouteTable`] snapshot behind an `ArcSwap`:
//! the request path takes no lock.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, HOST};
use http::request::Parts;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response, Version};

use access::auth::{self, AuthSource};
use access::routing;
use access::upstream_headers::{self, Downstream};
use access::{Access, Early, Problem, Reply, RequestInfo, Verdict};
use config::{ForwardAuthConfig, IpNet};
use metrics::{Metrics, RouteMetrics};
use policy::{Reason, Require};

use crate::body::{BoxError, Idle, Progress, ReqBody};
use crate::failure::ForwardError;
use crate::forward::forward;
use crate::forward_auth::{self, Answering};
use crate::serve::{self, Conn};
use crate::upstream::UpstreamPool;

/// A route as the request path sees it: the access decision's route, forwarding to a pool.
pub type Route = access::Route<Arc<UpstreamPool>>;

/// The routing snapshot the request path reads.
pub type RouteTable = access::RouteTable<Arc<UpstreamPool>>;

/// Settings of the request path that do not change without a restart.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Replaced by a reload; read once per request.
    pub trusted_proxies: Arc<ArcSwap<Vec<IpNet>>>,
    pub max_request_header_bytes: usize,
    /// The longest wait for the next piece of a request body.
    pub client_read_timeout: Duration,
    /// HTTP/1.1 requests served on one connection before it is closed.
    pub client_keepalive_requests: Option<u32>,
}

/// The proxy application.
pub struct Gateway {
    routes: Arc<ArcSwap<RouteTable>>,
    settings: ProxySettings,
    metrics: Metrics,
    access: Arc<Access>,
    /// By listener (their order in `serve::start`): the forward-auth listeners' settings.
    forward_auth: Vec<Option<ForwardAuthConfig>>,
}

impl serve::Handler for Gateway {
    type Body = GatewayBody;
    type Error = BoxError;

    async fn call(&self, req: Request<Incoming>, conn: Arc<Conn>) -> Response<GatewayBody> {
        // This request included (counted when the connection took it).
        let served = conn.requests.load(std::sync::atomic::Ordering::Relaxed);
        let mut log = AccessLog::start(&self.metrics, &req, &conn);
        let h1 = req.version() <= Version::HTTP_11;
        let (mut resp, close) = self.handle(req, &conn, &mut log).await;
        let limit_reached = self
            .settings
            .client_keepalive_requests
            .is_some_and(|n| served >= u64::from(n));
        if h1 && (close || limit_reached) {
            resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        } else if !h1 {
            // Connection-specific fields are not allowed in HTTP/2 (RFC 9113 §8.2.2).
            resp.headers_mut().remove(CONNECTION);
        }
        log.status = resp.status().as_u16();
        resp.map(|inner| GatewayBody { inner, log: Some(log) })
    }
}

/// A response before its log is attached; `bool`: close the connection after it.
type Answer = (Response<Inner>, bool);

impl Gateway {
    pub fn new(
        routes: Arc<ArcSwap<RouteTable>>,
        settings: ProxySettings,
        metrics: Metrics,
        access: Arc<Access>,
    ) -> Self {
        Self {
            routes,
            settings,
            metrics,
            access,
            forward_auth: Vec::new(),
        }
    }

    /// Which listeners (by their order in `serve::start`) answer an ingress's checks.
    pub fn with_forward_auth(mut self, by_listener: Vec<Option<ForwardAuthConfig>>) -> Self {
        self.forward_auth = by_listener;
        self
    }

    async fn handle(&self, req: Request<Incoming>, conn: &Conn, log: &mut AccessLog) -> Answer {
        let (parts, body) = req.into_parts();
        if header_bytes(&parts) > self.settings.max_request_header_bytes {
            return self.refuse(&body, log, Problem::for_status(431));
        }
        if let Some(fa) = self.forward_auth.get(conn.listener).and_then(Option::as_ref) {
            return self.check(fa, parts, body, conn, log).await;
        }
        log.page = access::wants_page(&parts);
        // `access::is_navigation`, without reading the headers twice.
        log.navigation = log.page && (parts.method == http::Method::GET || log.head);
        if parts.uri.path().starts_with("/.portcullis/") {
            return self
                .own_endpoint(parts, body, conn.tls, conn.client_identity.as_ref(), log)
                .await;
        }
        match self
            .route_and_decide(&parts, conn.tls, conn.client_identity.as_ref(), log)
            .await
        {
            Err(p) => self.refuse(&body, log, p),
            Ok((_, Some(reply))) => self.reply(log, &reply, !body.is_end_stream()),
            Ok((route, None)) => self.proxy(parts, body, conn, &route, log).await,
        }
    }

    /// Routes the request `parts` describes (`tls`: the client reached it over TLS) and takes
    /// the access decision: the route, with the gateway's own answer when it answers (`None`:
    /// let the request through). `Err`: refused before any route (bad path, no route). The
    /// proxy and the forward-auth checks share it, so they cannot decide differently.
    async fn route_and_decide(
        &self,
        parts: &Parts,
        tls: bool,
        client_cert: Option<&device::identify::CertIdentity>,
        log: &mut AccessLog,
    ) -> Result<(Arc<Route>, Option<Reply>), Problem> {
        if !routing::path_is_safe(parts.uri.path()) {
            return Err(Problem::new(
                400,
                "bad_path",
                "Bad Request",
                "The path has dot segments or encoded separators; send it normalised.",
            ));
        }
        let route = {
            let table = self.routes.load();
            let host = access::host_of(parts).and_then(routing::normalize_host);
            host.as_deref()
                .and_then(|h| table.router.find(h, parts.uri.path()))
                .cloned()
        };
        let Some(route) = route else {
            return Err(Problem::new(
                404,
                "no_route",
                "Not Found",
                "No application is configured for this address.",
            ));
        };
        log.route = Some(route.clone());

        // The access decision is taken here, before any upstream connection is made.
        if route.policy.require == Require::Nothing {
            log.verdict.early = Some(Early::OpenRoute);
            route.metrics.decided_early(Reason::OpenRoute, true);
            return Ok((route, None));
        }
        let info = RequestInfo::new(parts, tls, client_cert, log.navigation);
        let reply = self.access.decide(&info, &mut log.verdict, &route).await;
        match (&log.verdict.decision, log.verdict.early) {
            (Some(d), _) => route.metrics.decision(d),
            // Authentication answered first: sign-in, 401, or a refused token.
            (None, Some(Early::Auth(reason))) => route.metrics.decided_early(reason, false),
            (None, Some(Early::OpenRoute | Early::GatewayEndpoint | Early::Refused(_)) | None) => {}
        }
        Ok((route, reply))
    }

    /// A forward-auth listener's request: a check from the ingress, answered as it expects
    /// ([`forward_auth`]), or a `/.portcullis/` request it proxied.
    async fn check(
        &self,
        fa: &ForwardAuthConfig,
        parts: Parts,
        body: Incoming,
        conn: &Conn,
        log: &mut AccessLog,
    ) -> Answer {
        log.ingress = Some(fa.ingress);
        if !forward_auth::trusts(fa, conn.peer.ip()) {
            tracing::warn!(peer = %conn.peer.ip(), ingress = fa.ingress.as_str(), "a forward-auth check from an address outside forward_auth.trusted is refused");
            let p = Problem::new(
                403,
                "untrusted_ingress",
                "Forbidden",
                "This address may not ask this gateway for decisions.",
            );
            return self.refuse(&body, log, p);
        }
        let described = match forward_auth::describe(fa.ingress, &parts, conn.tls, conn.peer.ip()) {
            Ok(d) => d,
            Err(p) => return self.refuse(&body, log, p),
        };
        let d = described.parts;
        // The log line shows the request the client made, not the check.
        (log.method, log.uri, log.client) = (d.method.clone(), d.uri.clone(), described.client);
        log.page = access::wants_page(&d);
        log.navigation = log.page && (d.method == http::Method::GET || d.method == http::Method::HEAD);
        let answering = described.answering;
        if answering == Answering::Direct {
            // The connection's client certificate is the ingress's, not the user's device's.
            return self.own_endpoint(d, body, described.tls, None, log).await;
        }
        let unread = !body.is_end_stream();
        // The connection's client certificate is the ingress's, not the user's device's.
        let (route, reply) = match self.route_and_decide(&d, described.tls, None, log).await {
            Ok((route, reply)) => (Some(route), reply),
            Err(p) => {
                log.verdict.early = Some(Early::Refused(p.reason));
                (None, Some(Reply::problem(p)))
            }
        };
        let (mut resp, close) = match (reply, answering) {
            (None, _) => {
                let (resp, close) = self.allowed_answer(&d, route.as_deref(), conn, log);
                (resp, close || unread)
            }
            (Some(reply), Answering::Full | Answering::Direct) => self.reply(log, &reply, unread),
            (Some(reply), Answering::Status) => {
                let (resp, close) = status_only_answer(fa.ingress, &reply, log);
                (resp, close || unread)
            }
        };
        resp.headers_mut()
            .insert(REASON, HeaderValue::from_static(log.verdict.reason()));
        (resp, close)
    }

    /// An allowed check's answer: 200 with every identity header (empty when it does not
    /// apply), the assertion, and the cookies the app may have.
    fn allowed_answer(&self, d: &Parts, route: Option<&Route>, conn: &Conn, log: &AccessLog) -> Answer {
        let (mut resp, close) = own(
            access::Rendered {
                status: 200,
                headers: vec![("cache-control", "no-store".to_string())],
                body: String::new(),
                close: false,
            },
            log.head,
        );
        if let Some(route) = route {
            let h = resp.headers_mut();
            upstream_headers::identity_headers(h, &log.verdict, &conn.identity_values);
            if let Some(v) = self
                .assertion(route, &log.verdict)
                .and_then(|jwt| HeaderValue::try_from(jwt).ok())
            {
                h.insert(ASSERTION, v);
            }
        }
        // The request's cookies without the gateway's own, for the ingress to send on
        // instead of the client's `Cookie`.
        // (and as `Cookie`, for those that copy headers by name without renaming them).
        let mut cookies = http::HeaderMap::new();
        for c in d.headers.get_all(http::header::COOKIE) {
            cookies.append(http::header::COOKIE, c.clone());
        }
        self.strip_own_cookies(&mut cookies);
        let kept = cookies
            .remove(http::header::COOKIE)
            .unwrap_or(HeaderValue::from_static(""));
        resp.headers_mut().insert(forward_auth::COOKIE_HEADER, kept.clone());
        resp.headers_mut().insert(http::header::COOKIE, kept);
        for name in &forward_auth::IDENTITY_HEADERS {
            if !resp.headers().contains_key(name) {
                resp.headers_mut().insert(name.clone(), HeaderValue::from_static(""));
            }
        }
        (resp, close)
    }

    /// Forwards to a backend of the route's pool: a connect failure goes to the next backend
    /// whatever the method (nothing was sent); a backend that ends the connection without
    /// answering gets an idempotent request without a body sent to the next one; anything else
    /// is answered with its problem.
    async fn proxy(&self, mut parts: Parts, body: Incoming, conn: &Conn, route: &Route, log: &mut AccessLog) -> Answer {
        self.upstream_headers(&mut parts, conn, route, log);
        // One look at `Upgrade`: whether there is one, and whether it is a WebSocket.
        let upgrade_to = parts
            .headers
            .get(http::header::UPGRADE)
            .map(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
        let mut upgrade = upgrade_to.and_then(|websocket| {
            let on = parts.extensions.remove::<hyper::upgrade::OnUpgrade>()?;
            // Through a route that enforces a device, the connection follows its posture.
            let follow = route
                .follow_posture
                .then(|| self.access.live.register_verdict(&route.policy, &log.verdict))
                .flatten()
                .map(|(registration, cut)| crate::upgraded::Following {
                    registration,
                    cut,
                    websocket,
                });
            Some((on, conn.hold(), follow))
        });
        let pool = &route.upstream;
        let empty = body.is_end_stream();
        let replayable = parts.method.is_idempotent() && empty;
        let progress = (!empty).then(|| Arc::new(Progress::default()));
        let mut unsent = (!empty).then(|| Idle::new(body, self.settings.client_read_timeout));
        // A second try needs the request again; only a pool with another backend can have one.
        let again = (pool.size() > 1).then(|| (parts.method.clone(), parts.uri.clone(), parts.headers.clone()));
        let mut first = Some(parts);
        let mut tried: Vec<SocketAddr> = Vec::new();
        let result = loop {
            let Some(addr) = pool.pool.pick(&tried) else {
                break Err(ForwardError::NoBackend(pool.name.clone()));
            };
            log.upstream = Some(addr);
            let body = match (&progress, unsent.take()) {
                (Some(p), Some(b)) => ReqBody::streamed(b, p.clone()),
                (None, _) | (Some(_), None) => ReqBody::empty(),
            };
            let req = match (first.take(), &again) {
                (Some(parts), _) => Request::from_parts(parts, body),
                (None, Some((method, uri, headers))) => {
                    let mut r = Request::new(body);
                    *r.method_mut() = method.clone();
                    *r.uri_mut() = uri.clone();
                    *r.headers_mut() = headers.clone();
                    r
                }
                // Only reached with `again` set: a retry happens only when the pool has more.
                (None, None) => break Err(ForwardError::NoBackend(pool.name.clone())),
            };
            match forward(pool, req, addr, progress.as_ref(), &mut upgrade).await {
                Ok(resp) => break Ok(resp),
                Err(e) => {
                    let mut next =
                        tried.len() + 1 < pool.size() && (e.is_connect() || (replayable && e.is_unanswered()));
                    if let (true, Some(p)) = (next, &progress) {
                        // The body goes to the next backend only if none of it was sent.
                        unsent = p.take_unsent();
                        next = unsent.is_some();
                    }
                    if !next {
                        break Err(e);
                    }
                    route.metrics.upstream_error(e.classify().1);
                    tracing::warn!(route = %route.name, error = %e, "upstream failed; trying the next backend");
                    tried.push(addr);
                }
            }
        };
        match result {
            Ok(resp) => {
                let (mut head, body) = resp.into_parts();
                upstream_headers::strip_hop_by_hop(&mut head.headers);
                let body = Inner::Upstream(Idle::new(body, pool.timeouts.read));
                (Response::from_parts(head, body), false)
            }
            Err(e) => {
                let (_, kind) = e.classify();
                route.metrics.upstream_error(kind);
                log.error = Some(kind.as_str());
                tracing::warn!(route = %route.name, error = %e, "upstream failed");
                let reply = Reply::Problem {
                    problem: e.problem(),
                    close: true,
                    headers: Vec::new(),
                };
                own(reply.render(log.page), log.head)
            }
        }
    }

    /// Header hygiene, forwarding headers and the verified identity, on the request about to
    /// go upstream. Hop-by-hop fields go first: a client naming an identity header in
    /// `Connection` must not get to remove the gateway's own.
    fn upstream_headers(&self, parts: &mut Parts, conn: &Conn, route: &Route, log: &AccessLog) {
        let host: Option<HeaderValue> = match parts.headers.get(HOST) {
            Some(v) => Some(v.clone()),
            // HTTP/2 clients send :authority only; HTTP/1.1 upstreams need Host.
            None => parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
        };
        let downstream = Downstream {
            client: Some(&conn.client_value),
            trusted: self.is_trusted(Some(conn.peer.ip())),
            tls: conn.tls,
            host: host.as_ref(),
        };
        let verdict = &log.verdict;
        let assertion = self.assertion(route, verdict);
        let h = &mut parts.headers;
        upstream_headers::strip_hop_by_hop(h);
        // Room for the forwarding and identity headers at once, not a regrowth per few.
        h.reserve(12);
        if let (false, Some(v)) = (h.contains_key(HOST), &host) {
            h.insert(HOST, v.clone());
        }
        upstream_headers::sanitize(h, downstream);
        self.strip_own_cookies(h);
        upstream_headers::identity_headers(h, verdict, &conn.identity_values);
        // A signed JWT: always a valid header value.
        if let Some(v) = assertion.and_then(|jwt| HeaderValue::try_from(jwt).ok()) {
            h.insert(ASSERTION, v);
        }
    }

    /// Removes the gateway's own cookies (session, sign-in, grace acknowledgement) from `h`:
    /// the app never gets them.
    fn strip_own_cookies(&self, h: &mut http::HeaderMap) {
        let id = self.access.identity.as_ref().map(|c| c.load());
        let (session, login) = id
            .as_deref()
            .map_or(("", ""), |id| (id.cookie_name.as_str(), id.login_cookie_name.as_str()));
        upstream_headers::strip_own_cookies(h, &[session, login, access::grace::ACK_COOKIE]);
    }

    /// The signed assertion of the decision for a route that asks for one.
    fn assertion(&self, route: &Route, verdict: &Verdict) -> Option<String> {
        match verdict.principal.as_ref() {
            Some(p) if route.assertion => {
                let claims = serde_json::json!({
                    "aud": route.name, "sub": &*p.object_id, "tid": &*p.tenant, "upn": p.username.as_deref(),
                    "device_id": verdict.device.as_ref().map(|(d, _)| d.as_str()),
                    "device_source": verdict.device.as_ref().map(|(_, s)| s.as_str()),
                    "posture": verdict.posture.as_ref().map(|p| p.state.as_str()),
                    "posture_as_of": verdict.posture.as_ref().map(|p| p.as_of),
                    "decision": verdict.reason(),
                });
                self.access.assertions.sign(claims, base::time::unix_now())
            }
            Some(_) | None => None,
        }
    }

    /// `/.portcullis/…`: the gateway's own endpoints, on every host. `tls` and `cert`: how the
    /// client reached the gateway (as [`Self::route_and_decide`] takes them).
    async fn own_endpoint(
        &self,
        parts: Parts,
        body: Incoming,
        tls: bool,
        cert: Option<&device::identify::CertIdentity>,
        log: &mut AccessLog,
    ) -> Answer {
        log.verdict.early = Some(Early::GatewayEndpoint);
        let reply = match (self.access.identity(), parts.uri.path()) {
            (Some(id), identity::oidc::CALLBACK_PATH) => {
                let reply = match read_form(&parts, body, self.settings.client_read_timeout).await {
                    Ok(form) => auth::callback(&id, &parts, &form).await,
                    Err(status) => Reply::Problem {
                        problem: Problem::for_status(status),
                        close: true,
                        headers: Vec::new(),
                    },
                };
                // The body was read whole (or the reply closes the connection).
                return self.reply(log, &reply, false);
            }
            (Some(id), identity::oidc::SIGN_OUT_PATH) => {
                let info = RequestInfo::new(&parts, tls, None, log.navigation);
                auth::sign_out(&id, &info).await
            }
            (Some(_), identity::oidc::SIGNED_OUT_PATH) => auth::signed_out(),
            (_, "/.portcullis/continue") => self.continue_to(&parts),
            (_, forward_auth::ANSWER_PATH) => match forward_auth::answer_target(&parts) {
                Some(target) => self.answer_for(&parts, &target, tls, cert, log).await,
                None => Reply::problem(Problem::new(
                    400,
                    "bad_return_url",
                    "Bad Request",
                    "rd must be a path, or a URL on this host.",
                )),
            },
            (_, access::grace::ACK_PATH) => access::grace::ack(&parts),
            (_, "/.portcullis/jwks.json") => Reply::Body {
                status: 200,
                content_type: "application/json",
                body: self.access.assertions.jwks().to_string(),
            },
            (Some(_), _) | (None, _) => Reply::problem(Problem::new(404, "no_route", "Not Found", "")),
        };
        self.reply(log, &reply, !body.is_end_stream())
    }

    /// `/.portcullis/answer?rd=…`: what a browser gets for `target` on this host — the sign-in,
    /// the landing, or (let through) a redirect back to it. For an ingress that can only send
    /// a refused browser to one sign-in URL (ingress-nginx's `auth-signin`).
    async fn answer_for(
        &self,
        parts: &Parts,
        target: &str,
        tls: bool,
        cert: Option<&device::identify::CertIdentity>,
        log: &mut AccessLog,
    ) -> Reply {
        let Ok(mut asked) = http::Request::get(target).body(()).map(|r| r.into_parts().0) else {
            return Reply::problem(Problem::new(
                400,
                "bad_return_url",
                "Bad Request",
                "rd is not a request target.",
            ));
        };
        asked.headers = parts.headers.clone();
        asked.version = parts.version;
        log.verdict.early = None;
        log.uri = asked.uri.clone();
        match self.route_and_decide(&asked, tls, cert, log).await {
            Err(p) => {
                log.verdict.early = Some(Early::Refused(p.reason));
                Reply::problem(p)
            }
            Ok((_, Some(reply))) => reply,
            Ok((_, None)) => Reply::Redirect {
                status: 302,
                location: target.to_string(),
                headers: Vec::new(),
            },
        }
    }

    /// `/.portcullis/continue?return_to=URL&sig=SIG`: back from a custom landing page, only to a
    /// URL this gateway signed, on the host the request came to (and that the gateway serves).
    fn continue_to(&self, parts: &Parts) -> Reply {
        let params: Vec<(String, String)> = parts
            .uri
            .query()
            .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let table = self.routes.load();
        let landings = self.access.landings.load();
        // Only back to the host the user is on (the signed URL's host comes from a request's
        // Host header, so with a host-less route anyone could get one signed for any name),
        // or to a host the configuration names.
        let here = access::host_of(parts)
            .and_then(routing::normalize_host)
            .map(|h| h.into_owned());
        let served = |host: &str| {
            // normalize_host drops a trailing dot; the signed URL keeps the one it was sent with.
            let host = host.trim_end_matches('.');
            (here.as_deref() == Some(host) && table.router.serves(host)) || landings.allows_return_host(host)
        };
        let target = match (get("return_to"), get("sig")) {
            (Some(url), Some(sig)) => landings.signer().verify(url, sig, served).map(str::to_string),
            (Some(_), None) | (None, Some(_)) | (None, None) => None,
        };
        match target {
            Some(location) => Reply::Redirect {
                status: 302,
                location,
                headers: Vec::new(),
            },
            None => Reply::problem(Problem::new(
                400,
                "bad_return_url",
                "Bad Request",
                "The return address is not one this gateway issued.",
            )),
        }
    }

    fn is_trusted(&self, ip: Option<IpAddr>) -> bool {
        ip.is_some_and(|ip| self.settings.trusted_proxies.load().iter().any(|n| n.contains(ip)))
    }

    /// A reply of the gateway's own. A request body it did not read (`unread`) closes the
    /// connection (HTTP/1.1): the unread bytes must never be parsed as the next request.
    fn reply(&self, log: &mut AccessLog, reply: &Reply, unread: bool) -> Answer {
        log.verdict.responded = Some(reply.status());
        if log.route.is_none() {
            log.unrouted = Some(self.routes.load().unrouted.clone());
        }
        let (resp, close) = own(reply.render(log.page), log.head);
        (resp, close || unread)
    }

    /// Refuses a request before routing or access, with `problem`.
    fn refuse(&self, body: &Incoming, log: &mut AccessLog, problem: Problem) -> Answer {
        log.verdict.early = Some(Early::Refused(problem.reason));
        self.reply(log, &Reply::problem(problem), !body.is_end_stream())
    }
}

/// The signed assertion header of an allowed request.
const ASSERTION: http::HeaderName = http::HeaderName::from_static("x-portcullis-assertion");
/// The decision's reason code on a forward-auth answer.
const REASON: http::HeaderName = http::HeaderName::from_static("x-portcullis-reason");

/// A refusal as nginx `auth_request` takes it: 401 or 403, no body, with the
/// redirect's target in `X-Portcullis-Location`.
fn status_only_answer(ingress: config::Ingress, reply: &Reply, log: &mut AccessLog) -> Answer {
    // ingress-nginx sends only a 401 to its sign-in URL (`/.portcullis/answer`),
    // which then shows the browser its landing.
    let signs_in = matches!(log.verdict.early, Some(Early::Auth(_)))
        || (ingress == config::Ingress::IngressNginx && log.navigation);
    let rendered = reply.render(log.page);
    // Even a 5xx (sessions unavailable): nginx passes only 401 and 403 to its error_page,
    // whose /verify then shows the real answer.
    let status = forward_auth::status_only(signs_in);
    log.verdict.responded = Some(status);
    let mut headers: Vec<(&'static str, String)> = rendered
        .headers
        .into_iter()
        .filter(|(n, _)| *n == "www-authenticate" || *n == "cache-control")
        .collect();
    if let Reply::Redirect { location, .. } = reply {
        headers.push(("x-portcullis-location", location.clone()));
    }
    let answer = access::Rendered {
        status,
        headers,
        body: String::new(),
        close: rendered.close,
    };
    own(answer, log.head)
}

/// A rendered reply as a response, and whether it closes the connection.
fn own(rendered: access::Rendered, head: bool) -> Answer {
    let close = rendered.close;
    let resp = crate::respond::response(rendered, head);
    (resp.map(|full| Inner::Own(Some(full))), close)
}

/// The sign-in callback's form body, read whole: at most [`auth::MAX_CALLBACK_BODY`] bytes
/// (else 413), each piece within `timeout` (else 408); empty for anything but a POST.
async fn read_form(parts: &Parts, body: Incoming, timeout: Duration) -> Result<Vec<u8>, u16> {
    use http_body_util::BodyExt;
    if parts.method != http::Method::POST {
        return Ok(Vec::new());
    }
    match http_body_util::Limited::new(Idle::new(body, timeout), auth::MAX_CALLBACK_BODY)
        .collect()
        .await
    {
        Ok(b) => Ok(b.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(413),
        Err(e) if e.is::<crate::body::IdleTimeout>() => Err(408),
        Err(_) => Err(400),
    }
}

fn header_bytes(parts: &Parts) -> usize {
    let line = parts.method.as_str().len() + parts.uri.path_and_query().map_or(1, |p| p.as_str().len()) + 12;
    parts
        .headers
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

/// A response body: the gateway's own (whole) or the upstream's (streamed), carrying the
/// request's [`AccessLog`], written when the body is done with.
pub struct GatewayBody {
    inner: Inner,
    log: Option<AccessLog>,
}

enum Inner {
    Own(Option<http_body_util::Full<Bytes>>),
    Upstream(Idle<Incoming>),
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Own(full) => match full {
                Some(f) => match Pin::new(f).poll_frame(cx) {
                    Poll::Ready(frame) => Poll::Ready(frame.map(|r| r.map_err(|never| match never {}))),
                    Poll::Pending => Poll::Pending,
                },
                None => Poll::Ready(None),
            },
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx),
        };
        if let (Poll::Ready(Some(Err(e))), Some(log)) = (&polled, this.log.as_mut()) {
            log.error = Some(if e.is::<crate::body::IdleTimeout>() {
                "upstream_body_timeout"
            } else {
                "upstream_body"
            });
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Own(full) => full.as_ref().is_none_or(Body::is_end_stream),
            Inner::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Own(full) => full.as_ref().map_or(SizeHint::with_exact(0), Body::size_hint),
            Inner::Upstream(body) => body.size_hint(),
        }
    }
}

/// What one request's log line and metrics need; written when dropped (the response body
/// finished, failed, or the client went away), so the duration and the in-flight gauge cover
/// the whole response.
pub struct AccessLog {
    started: Instant,
    requests_in_flight: prometheus::IntGauge,
    unrouted: Option<RouteMetrics>,
    route: Option<Arc<Route>>,
    method: http::Method,
    uri: http::Uri,
    version: Version,
    /// A redirectable browser navigation ([`access::is_navigation`]).
    navigation: bool,
    /// A browser loading a document, of any method: refusals are pages ([`access::wants_page`]).
    page: bool,
    head: bool,
    client: IpAddr,
    /// The ingress whose check this was (a forward-auth listener).
    ingress: Option<config::Ingress>,
    upstream: Option<SocketAddr>,
    /// 0 until a response head exists: the client went away before it.
    status: u16,
    error: Option<&'static str>,
    verdict: Verdict,
}

impl AccessLog {
    fn start(metrics: &Metrics, req: &Request<Incoming>, conn: &Conn) -> Self {
        metrics.requests_in_flight.inc();
        Self {
            started: Instant::now(),
            requests_in_flight: metrics.requests_in_flight.clone(),
            unrouted: None,
            route: None,
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            navigation: false,
            page: false,
            head: req.method() == http::Method::HEAD,
            client: conn.peer.ip(),
            ingress: None,
            upstream: None,
            status: 0,
            error: None,
            verdict: Verdict::default(),
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.requests_in_flight.dec();
        let elapsed = self.started.elapsed();
        let (route_name, metrics) = match (&self.route, &self.unrouted) {
            (Some(r), _) => (r.name.as_str(), Some(&r.metrics)),
            (None, unrouted) => ("none", unrouted.as_ref()),
        };
        if let Some(m) = metrics {
            m.observe(self.status, elapsed.as_secs_f64());
        }
        let v = &self.verdict;
        tracing::info!(
            target: "access",
            route = route_name,
            method = %self.method,
            path = self.uri.path(),
            protocol = ?self.version,
            status = self.status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            upstream = self.upstream.map(tracing::field::display),
            client = %self.client,
            ingress = self.ingress.map(config::Ingress::as_str),
            user = v.principal.as_ref().map(|p| tracing::field::display(&p.object_id)),
            auth = v.auth_source.map(AuthSource::as_str),
            outcome = match v.decision {
                Some(d) if d.would_deny.is_some() => "report_only",
                Some(d) if d.is_allowed() => "allow",
                Some(_) => "deny",
                None if v.early == Some(Early::GatewayEndpoint) => "gateway",
                None if v.responded.is_some() => "deny",
                None => "allow",
            },
            reason = v.reason(),
            device = v.device.as_ref().map(|(d, _)| d.as_str()),
            device_source = v.device.as_ref().map(|(_, s)| s.as_str()),
            posture = v.posture.as_ref().map(|p| p.state.as_str()),
            posture_age = v.posture.as_ref().map(|p| base::time::unix_now().saturating_sub(p.as_of)),
            error = self.error,
        );
    }
}
