//! The pingora [`ProxyHttp`] adapter: the per-request context and the request path.
//!
//! Order per request: limits → the gateway's own endpoints → route → access decision
//! ([`access::Access`]) → upstream peer with connect failover → header hygiene and verified
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

use access::auth::{self, AuthSource};
use access::routing;
use access::{Access, Early, Problem, Reply, RequestInfo, Verdict};
use config::IpNet;
use metrics::Metrics;
use policy::{Reason, Require};

use access::upstream_headers::{self, Downstream};

use crate::headers;
use crate::respond::{self, Failure};
use crate::tls::ClientCert;
use crate::upstream::UpstreamPool;

/// A route as the request path sees it: the access decision's route, forwarding to a pool.
pub type Route = access::Route<Arc<UpstreamPool>>;

/// The routing snapshot the request path reads.
pub type RouteTable = access::RouteTable<Arc<UpstreamPool>>;

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
        ctx.verdict.early = Some(Early::GatewayEndpoint);
        let path = session.req_header().uri.path();
        let reply = match (&self.access.identity, path) {
            (Some(id), identity::oidc::CALLBACK_PATH) => match read_form(session).await? {
                Some(body) => auth::callback(id, session.req_header().as_ref(), &body).await,
                None => Reply::Problem {
                    problem: Problem::for_status(413),
                    close: true,
                    headers: Vec::new(),
                },
            },
            (Some(id), identity::oidc::SIGN_OUT_PATH) => auth::sign_out(id, session.req_header().as_ref()).await,
            (_, "/.portcullis/continue") => self.continue_to(session.req_header()),
            (_, "/.portcullis/jwks.json") => Reply::Body {
                status: 200,
                content_type: "application/json",
                body: self.access.assertions.jwks().to_string(),
            },
            (Some(_), _) | (None, _) => Reply::problem(Problem::new(404, "no_route", "Not Found", "")),
        };
        self.write(session, ctx, &reply).await
    }

    /// `/.portcullis/continue?return_to=URL&sig=SIG`: back from a custom landing page, only to a
    /// URL this gateway signed, on the host the request came to (and that the gateway serves).
    fn continue_to(&self, req: &RequestHeader) -> Reply {
        let params: Vec<(String, String)> = req
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
        let here = access::host_of(req.as_ref())
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
        ip.is_some_and(|ip| self.settings.trusted_proxies.iter().any(|n| n.contains(ip)))
    }

    /// Writes a reply of the gateway's own and records its status.
    async fn write(&self, session: &mut Session, ctx: &mut RequestCtx, reply: &Reply) -> pingora::Result<bool> {
        ctx.verdict.responded = Some(reply.status());
        respond::write_reply(session, reply).await?;
        Ok(true)
    }

    /// Refuses a request before routing or access, with `problem`.
    async fn refuse(&self, session: &mut Session, ctx: &mut RequestCtx, problem: Problem) -> pingora::Result<bool> {
        ctx.verdict.early = Some(Early::Refused(problem.reason));
        self.write(session, ctx, &Reply::problem(problem)).await
    }
}

/// The sign-in callback's form body, read whole; `None` when it is larger than
/// [`auth::MAX_CALLBACK_BODY`].
async fn read_form(session: &mut Session) -> pingora::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    if session.req_header().method != http::Method::POST {
        return Ok(Some(body));
    }
    while let Some(chunk) = session.read_request_body().await? {
        body.extend_from_slice(&chunk);
        if body.len() > auth::MAX_CALLBACK_BODY {
            return Ok(None);
        }
    }
    Ok(Some(body))
}

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
    let left = ctx.tried.len() < route.upstream.size();
    if left {
        tracing::warn!(route = %route.name, upstream = %addr, error = %e, "{message}");
    }
    left
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
            return self.refuse(session, ctx, Problem::for_status(431)).await;
        }
        if req.uri.path().starts_with("/.portcullis/") {
            return self.own_endpoint(session, ctx).await;
        }
        if !routing::path_is_safe(req.uri.path()) {
            let p = Problem::new(
                400,
                "bad_path",
                "Bad Request",
                "The path has dot segments or encoded separators; send it normalised.",
            );
            return self.refuse(session, ctx, p).await;
        }
        let table = self.routes.load();
        let host = access::host_of(req.as_ref()).and_then(routing::normalize_host);
        let route = host.as_deref().and_then(|h| table.router.find(h, req.uri.path()));
        let Some(route) = route else {
            let p = Problem::new(
                404,
                "no_route",
                "Not Found",
                "No application is configured for this address.",
            );
            return self.refuse(session, ctx, p).await;
        };
        let route = route.clone();
        drop(table);
        ctx.route = Some(route.clone());

        // The access decision is taken here, before any upstream connection is made.
        if route.policy.require == Require::Nothing {
            ctx.verdict.early = Some(Early::OpenRoute);
            route.metrics.decided_early(Reason::OpenRoute, true);
            return Ok(false);
        }
        let cert = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|ssl| ssl.extension.get::<ClientCert>())
            .map(|c| &c.0);
        let info = RequestInfo::new(session.req_header().as_ref(), ctx.tls, cert);
        let reply = self
            .access
            .decide(&info, &mut ctx.verdict, &route.name, &route.policy, &route.groups_any)
            .await;
        match (&ctx.verdict.decision, ctx.verdict.early) {
            (Some(d), _) => route.metrics.decision(d),
            // Authentication answered first: sign-in, 401, or a refused token.
            (None, Some(Early::Auth(reason))) => route.metrics.decided_early(reason, false),
            (None, Some(Early::OpenRoute | Early::GatewayEndpoint | Early::Refused(_)) | None) => {}
        }
        match reply {
            Some(reply) => self.write(session, ctx, &reply).await,
            None => Ok(false),
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.as_ref() else {
            // request_filter answers every unrouted request; reaching this is a bug.
            return Err(Error::explain(ErrorType::InternalError, "no route in context"));
        };
        ctx.error_counted = false;
        match route.upstream.peer(&ctx.tried) {
            Some((addr, peer)) => {
                ctx.upstream = Some(addr);
                Ok(peer)
            }
            None => Err(Error::explain(
                ErrorType::Custom(respond::NO_HEALTHY_BACKEND),
                format!("pool {}", route.upstream.name),
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
        let host = access::host_of(session.req_header().as_ref()).map(str::to_owned);
        let downstream = Downstream {
            client_ip: ctx.client_ip,
            trusted: self.is_trusted(ctx.client_ip),
            tls: ctx.tls,
            host: host.as_deref(),
        };
        let assertion = match (ctx.route.as_ref(), ctx.verdict.principal.as_ref()) {
            (Some(route), Some(p)) if route.assertion => {
                let v = &ctx.verdict;
                let claims = serde_json::json!({
                    "aud": route.name, "sub": &*p.object_id, "tid": &*p.tenant, "upn": p.username.as_deref(),
                    "device_id": v.device.as_ref().map(|(d, _)| d.as_str()),
                    "device_source": v.device.as_ref().map(|(_, s)| s.as_str()),
                    "posture": v.posture.as_ref().map(|p| p.state.as_str()),
                    "posture_as_of": v.posture.as_ref().map(|p| p.as_of),
                    "decision": v.reason(),
                });
                self.access.assertions.sign(claims, base::time::unix_now())
            }
            (Some(_) | None, _) => None,
        };
        let verdict = &ctx.verdict;
        let identity = self.access.identity.as_ref();
        headers::edit_parts(upstream_request, |parts| {
            let h = &mut parts.headers;
            if !h.contains_key(http::header::HOST) {
                // HTTP/2 clients send :authority only; HTTP/1.1 upstreams need Host.
                if let Some(v) = downstream.host.and_then(|h| http::HeaderValue::from_str(h).ok()) {
                    h.insert(http::header::HOST, v);
                }
            }
            upstream_headers::sanitize(h, downstream);
            if let Some(id) = identity {
                upstream_headers::strip_own_cookies(h, &[&id.cookie_name, &id.login_cookie_name]);
            }
            upstream_headers::identity_headers(h, verdict.principal.as_deref(), verdict);
            // A signed JWT: always a valid header value.
            if let Some(v) = assertion.and_then(|jwt| http::HeaderValue::try_from(jwt).ok()) {
                h.insert(http::HeaderName::from_static("x-portcullis-assertion"), v);
            }
        })
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
            let reply = Reply::Problem {
                problem: respond::problem_for(failure),
                close: true,
                headers: Vec::new(),
            };
            if let Err(we) = respond::write_reply(session, &reply).await {
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
                None if ctx.verdict.early == Some(Early::GatewayEndpoint) => "gateway",
                None if ctx.verdict.responded.is_some() => "deny",
                None => "allow",
            },
            reason = ctx.verdict.reason(),
            device = ctx.verdict.device.as_ref().map(|(d, _)| d.as_str()),
            device_source = ctx.verdict.device.as_ref().map(|(_, s)| s.as_str()),
            posture = ctx.verdict.posture.as_ref().map(|p| p.state.as_str()),
            posture_age = ctx.verdict.posture.as_ref().map(|p| base::time::unix_now().saturating_sub(p.as_of)),
            error = e.map(|e| e.etype().as_str()),
        );
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        // The access log line already records the failure; pingora's own error log would
        // print it again, with the full error chain.
        matches!(Failure::classify(error), Failure::ClientGone)
    }
}
