//! The pingora [`ProxyHttp`] adapter: the per-request context and the request path.
//!
//! Order per request: limits → the gateway's own endpoints → route → access decision
//! ([`super::access`]) → upstream peer with connect failover → header hygiene and verified
//! identity headers → proxy → one access-and-decision log line and metrics. Shared state is an
//! immutable [`RouteTable`] snapshot behind an `ArcSwap`: the request path takes no lock.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, RetryType};

use super::access::{Access, Verdict};
use super::auth::{self, AuthSource};
use super::headers::{self, Downstream};
use super::respond::{self, Failure, Problem};
use super::routing::{self, Prefixed, Router};
use super::upstream::UpstreamPool;
use crate::config::IpNet;
use crate::metrics::{Metrics, RouteMetrics};
use crate::policy::{Reason, Require, RoutePolicy};

/// A route as the request path sees it.
pub struct Route {
    pub name: String,
    /// The host pattern the route answers for.
    pub host: crate::config::HostPattern,
    pub path_prefix: String,
    pub pool: Arc<UpstreamPool>,
    pub metrics: RouteMetrics,
    pub policy: RoutePolicy,
    /// Group object ids (lower case); the user must be in one. Empty: no check.
    pub groups_any: Arc<[Arc<str>]>,
    /// Send `X-Portcullis-Assertion`.
    pub assertion: bool,
}

impl Prefixed for Route {
    fn path_prefix(&self) -> &str {
        &self.path_prefix
    }
}

/// The routing snapshot; replaced whole when routes change.
pub struct RouteTable {
    pub router: Router<Route>,
    /// Metrics for requests that matched no route.
    pub unrouted: RouteMetrics,
}

/// Settings of the request path that do not change without a restart.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub trusted_proxies: Vec<IpNet>,
    pub max_request_header_bytes: usize,
    pub client_read_timeout: Duration,
    pub client_keepalive_timeout: Duration,
}

/// Per-request state, created by `new_ctx` and dropped after `logging`.
pub struct RequestCtx {
    started: Instant,
    route: Option<Arc<Route>>,
    /// Backends that failed to connect, or closed a fresh connection without answering, for
    /// this request; the next try skips them.
    tried: Vec<SocketAddr>,
    upstream: Option<SocketAddr>,
    client_ip: Option<IpAddr>,
    tls: bool,
    /// The last upstream error was already counted by `fail_to_connect`.
    error_counted: bool,
    /// The access decision and what it rested on.
    verdict: Verdict,
    _in_flight: InFlight,
}

/// Keeps `requests_in_flight` right even if a request task is dropped mid-way.
struct InFlight(prometheus::IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The proxy application.
pub struct Gateway {
    routes: Arc<ArcSwap<RouteTable>>,
    settings: ProxySettings,
    metrics: Metrics,
    access: Arc<Access>,
}

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
        }
    }

    /// `/.portcullis/…`: the gateway's own endpoints, on every host.
    async fn own_endpoint(&self, session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<bool> {
        let path = session.req_header().uri.path();
        let status = match (&self.access.identity, path) {
            (Some(id), crate::identity::oidc::CALLBACK_PATH) => auth::callback(id, session).await?,
            (Some(id), crate::identity::oidc::SIGN_OUT_PATH) => auth::sign_out(id, session).await?,
            (_, "/.portcullis/continue") => self.continue_to(session).await?,
            (_, "/.portcullis/jwks.json") => {
                let body = self.access.assertions.jwks().to_string();
                respond::write_body(session, 200, "application/json", body, false).await?;
                200
            }
            (Some(_), _) | (None, _) => {
                let p = Problem {
                    status: 404,
                    reason: "no_route",
                    title: "Not Found",
                    detail: "",
                };
                respond::write_problem(session, &p, true).await?;
                404
            }
        };
        ctx.verdict.responded = Some(status);
        ctx.verdict.reason = "gateway_endpoint";
        Ok(true)
    }

    /// `/.portcullis/continue?return_to=URL&sig=SIG`: back from a custom landing page, only to a
    /// URL this gateway signed, on the host the request came to (and that the gateway serves).
    async fn continue_to(&self, session: &mut Session) -> pingora::Result<u16> {
        let params: Vec<(String, String)> = session
            .req_header()
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
        let here = request_host(session.req_header())
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
            Some(url) => {
                respond::write_redirect(session, 302, &url, &[]).await?;
                Ok(302)
            }
            None => {
                let p = Problem {
                    status: 400,
                    reason: "bad_return_url",
                    title: "Bad Request",
                    detail: "The return address is not one this gateway issued.",
                };
                respond::write_problem(session, &p, true).await?;
                Ok(400)
            }
        }
    }

    fn is_trusted(&self, ip: Option<IpAddr>) -> bool {
        ip.is_some_and(|ip| self.settings.trusted_proxies.iter().any(|n| n.contains(ip)))
    }

    async fn respond(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        problem: Problem<'_>,
    ) -> pingora::Result<bool> {
        ctx.verdict.responded = Some(problem.status);
        ctx.verdict.reason = problem.reason;
        respond::write_problem(session, &problem, true).await?;
        Ok(true)
    }
}

/// Host the client asked for: `:authority` (HTTP/2, absolute-form) or the `Host` header.
/// Records that the current backend failed this request (counted once, skipped from now on)
/// and says whether another backend of the pool is left to try.
fn next_backend(ctx: &mut RequestCtx, e: &Error, message: &'static str) -> bool {
    let (Some(route), Some(addr)) = (ctx.route.as_ref(), ctx.upstream) else {
        return false;
    };
    ctx.tried.push(addr);
    if let Failure::Upstream { kind, .. } = Failure::classify(e) {
        route.metrics.upstream_error(kind);
        ctx.error_counted = true;
    }
    let left = ctx.tried.len() < route.pool.size();
    if left {
        tracing::warn!(route = %route.name, upstream = %addr, error = %e, "{message}");
    }
    left
}

fn request_host(req: &RequestHeader) -> Option<&str> {
    req.uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers.get(http::header::HOST).and_then(|v| v.to_str().ok()))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn header_bytes(req: &RequestHeader) -> usize {
    let line = req.method.as_str().len() + req.uri.path_and_query().map_or(1, |p| p.as_str().len()) + 12;
    req.headers
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        self.metrics.requests_in_flight.inc();
        RequestCtx {
            started: Instant::now(),
            route: None,
            tried: Vec::new(),
            upstream: None,
            client_ip: None,
            tls: false,
            error_counted: false,
            verdict: Verdict::default(),
            _in_flight: InFlight(self.metrics.requests_in_flight.clone()),
        }
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<()> {
        // pingora's idle keep-alive wait is its own default unless set per request (§5).
        session.set_keepalive(Some(self.settings.client_keepalive_timeout.as_secs().max(1)));
        session.set_read_timeout(Some(self.settings.client_read_timeout));
        ctx.client_ip = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<bool> {
        let req = session.req_header();
        if header_bytes(req) > self.settings.max_request_header_bytes {
            let p = Problem {
                status: 431,
                reason: "headers_too_large",
                title: "Request Header Fields Too Large",
                detail: "",
            };
            return self.respond(session, ctx, p).await;
        }
        if req.uri.path().starts_with("/.portcullis/") {
            return self.own_endpoint(session, ctx).await;
        }
        if !routing::path_is_safe(req.uri.path()) {
            let p = Problem {
                status: 400,
                reason: "bad_path",
                title: "Bad Request",
                detail: "The path has dot segments or encoded separators; send it normalised.",
            };
            return self.respond(session, ctx, p).await;
        }
        let table = self.routes.load();
        let host = request_host(req).and_then(routing::normalize_host);
        let route = host.as_deref().and_then(|h| table.router.find(h, req.uri.path()));
        let Some(route) = route else {
            let p = Problem {
                status: 404,
                reason: "no_route",
                title: "Not Found",
                detail: "No application is configured for this address.",
            };
            return self.respond(session, ctx, p).await;
        };
        let route = route.clone();
        drop(table);
        ctx.route = Some(route.clone());

        // The access decision is taken here, before any upstream connection is made.
        if route.policy.require == Require::Nothing {
            ctx.verdict.reason = "open_route";
            route.metrics.decided_early(Reason::OpenRoute, true);
            return Ok(false);
        }
        let answered = self
            .access
            .decide(
                session,
                &mut ctx.verdict,
                &route.name,
                &route.policy,
                &route.groups_any,
                ctx.tls,
            )
            .await?;
        match &ctx.verdict.decision {
            Some(d) => route.metrics.decision(d),
            // Authentication answered first: sign-in, 401, or a refused token.
            None if ctx.verdict.responded.is_some() => {
                let reason = if ctx.verdict.reason == Reason::Unauthenticated.as_str() {
                    Reason::Unauthenticated
                } else {
                    Reason::TokenInvalid
                };
                route.metrics.decided_early(reason, false);
            }
            None => {}
        }
        Ok(answered)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.as_ref() else {
            // request_filter answers every unrouted request; reaching this is a bug.
            return Err(Error::explain(ErrorType::InternalError, "no route in context"));
        };
        ctx.error_counted = false;
        match route.pool.peer(&ctx.tried) {
            Some((addr, peer)) => {
                ctx.upstream = Some(addr);
                Ok(peer)
            }
            None => Err(Error::explain(
                ErrorType::Custom(respond::NO_HEALTHY_BACKEND),
                format!("pool {}", route.pool.name),
            )
            .into_up()),
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing was sent yet, so any method may go to the next backend.
        let next = next_backend(ctx, &e, "upstream connect failed; trying the next backend");
        e.set_retry(next);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let replayable = session.req_header().method.is_idempotent() && !session.as_ref().retry_buffer_truncated();
        // pingora marks an error `ReusedOnly` when the app never answered the request (the
        // connection closed or reset before a response header). On a pooled connection that
        // is a stale connection and pingora retries. On a fresh one pingora gives up, since the
        // app may have acted on it; for an idempotent method re-sending is allowed (RFC 9110
        // §9.2.2), and the backend is likely going away (a listener closing with connections
        // in its backlog resets them after `connect` succeeded), so — like nginx's
        // `proxy_next_upstream error` — the request goes to the next backend instead.
        let unanswered = matches!(e.retry, RetryType::ReusedOnly);
        if !replayable {
            e.set_retry(false);
        } else if client_reused || !unanswered {
            e.retry.decide_reuse(client_reused);
        } else {
            let next = next_backend(
                ctx,
                &e,
                "upstream closed the connection without answering; trying the next backend",
            );
            e.set_retry(next);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let host = request_host(session.req_header()).map(str::to_owned);
        if upstream_request.headers.get(http::header::HOST).is_none() {
            // HTTP/2 clients send :authority only; HTTP/1.1 upstreams need Host.
            if let Some(h) = &host {
                upstream_request.insert_header(http::header::HOST, h.as_str())?;
            }
        }
        headers::sanitize(
            upstream_request,
            Downstream {
                client_ip: ctx.client_ip,
                trusted: self.is_trusted(ctx.client_ip),
                tls: ctx.tls,
                host: host.as_deref(),
            },
        )?;
        if let Some(id) = &self.access.identity {
            auth::strip_own_cookies(upstream_request, &[&id.cookie_name, &id.login_cookie_name])?;
        }
        headers::identity_headers(upstream_request, ctx.verdict.principal.as_deref(), &ctx.verdict)?;
        if let (Some(route), Some(p)) = (ctx.route.as_ref(), ctx.verdict.principal.as_ref()) {
            if route.assertion {
                let v = &ctx.verdict;
                let claims = serde_json::json!({
                    "aud": route.name, "sub": &*p.object_id, "tid": &*p.tenant, "upn": p.username.as_deref(),
                    "device_id": v.device.as_ref().map(|(d, _)| d.as_str()),
                    "device_source": v.device.as_ref().map(|(_, s)| s.as_str()),
                    "posture": v.posture.as_ref().map(|p| p.state.as_str()),
                    "posture_as_of": v.posture.as_ref().map(|p| p.as_of),
                    "decision": v.reason(),
                });
                if let Some(jwt) = self.access.assertions.sign(claims, now_secs()) {
                    upstream_request.insert_header("x-portcullis-assertion", jwt)?;
                }
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let failure = Failure::classify(e);
        if let (Failure::Upstream { kind, .. }, Some(route)) = (failure, ctx.route.as_ref()) {
            if !ctx.error_counted {
                route.metrics.upstream_error(kind);
            }
        }
        let status = failure.status();
        if status > 0 && session.response_written().is_none() {
            if let Err(we) = respond::write_problem(session, &Problem::for_failure(failure), false).await {
                tracing::debug!(error = %we, "could not write the error response");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.verdict.responded)
            .unwrap_or(0);
        let elapsed = ctx.started.elapsed();
        let table;
        let (route_name, metrics) = match &ctx.route {
            Some(r) => (r.name.as_str(), &r.metrics),
            None => {
                table = self.routes.load();
                ("none", &table.unrouted)
            }
        };
        metrics.observe(status, elapsed.as_secs_f64());
        let req = session.req_header();
        tracing::info!(
            target: "access",
            route = route_name,
            method = %req.method,
            path = req.uri.path(),
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            upstream = ctx.upstream.map(tracing::field::display),
            client = ctx.client_ip.map(tracing::field::display),
            user = ctx.verdict.principal.as_ref().map(|p| tracing::field::display(&p.object_id)),
            auth = ctx.verdict.auth_source.map(AuthSource::as_str),
            outcome = match ctx.verdict.decision {
                Some(d) if d.would_deny.is_some() => "report_only",
                Some(d) if d.is_allowed() => "allow",
                Some(_) => "deny",
                None if ctx.verdict.reason == "gateway_endpoint" => "gateway",
                None if ctx.verdict.responded.is_some() => "deny",
                None => "allow",
            },
            reason = ctx.verdict.reason(),
            device = ctx.verdict.device.as_ref().map(|(d, _)| d.as_str()),
            device_source = ctx.verdict.device.as_ref().map(|(_, s)| s.as_str()),
            posture = ctx.verdict.posture.as_ref().map(|p| p.state.as_str()),
            posture_age = ctx.verdict.posture.as_ref().map(|p| now_secs().saturating_sub(p.as_of)),
            error = e.map(|e| e.etype().as_str()),
        );
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        // The access log line already records the failure; pingora's own error log would
        // print it again, with the full error chain.
        matches!(Failure::classify(error), Failure::ClientGone)
    }
}
