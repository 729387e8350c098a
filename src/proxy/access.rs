//! The access decision on the request path: authenticate (bearer or session; sign-in or 401
//! when missing), check groups, identify the device, look up its posture (cache, then store
//! under a timeout; never Graph), call the pure [`policy::decide`], and answer refusals with
//! the landing the decision names. Everything the decision used is left in [`Verdict`] for the
//! identity headers and the decision log.

use std::sync::Arc;

use pingora::proxy::Session;

use super::auth::{self, AuthOutcome, AuthSource, GroupCheck};
use super::respond::{self, Problem};
use super::tls::ClientCert;
use crate::device::identify::CertIdentity;
use crate::device::{Devices, Lookup};
use crate::identity::{Identity, Principal, TokenError};
use crate::landing::{Answer, Landings, Refusal, Registration};
use crate::policy::{
    self, Decision, Device, DeviceSource, Facts, Groups, Landing, Posture, PostureState, Reason, RoutePolicy, User,
};

/// The components the decision needs.
pub struct Access {
    pub identity: Option<Arc<Identity>>,
    pub devices: Option<Arc<Devices>>,
    /// Replaced when the landing choice changes in the settings.
    pub landings: Arc<arc_swap::ArcSwap<Landings>>,
    pub assertions: Arc<super::assertion::AssertionSigner>,
}

/// What was decided, and on what grounds.
#[derive(Default)]
pub struct Verdict {
    pub principal: Option<Arc<Principal>>,
    pub auth_source: Option<AuthSource>,
    pub device: Option<(String, DeviceSource)>,
    pub posture: Option<Arc<Posture>>,
    pub decision: Option<Decision>,
    /// Reason code for the log when no decision was reached (authentication answered first).
    pub reason: &'static str,
    /// Status written by the gateway itself, if it answered.
    pub responded: Option<u16>,
    /// The group check, once made.
    pub groups: Option<Groups>,
    /// How the posture look-up went: not_needed, unidentified, found, unknown, unavailable.
    pub lookup: &'static str,
    /// The registration step a refusal of an unrecognized device names.
    pub registration: Option<Registration>,
    /// The time the decision was taken at (Unix seconds).
    pub now: u64,
}

impl Verdict {
    pub fn reason(&self) -> &'static str {
        self.decision.map_or(self.reason, |d| d.reason.as_str())
    }
}

/// Who asks, and the device evidence that came with the request: what the decision needs
/// after authentication. The proxy reads it off the request; explain builds it from a question.
pub struct Subject {
    pub principal: Arc<Principal>,
    /// The bearer token's `deviceid` claim.
    pub token_device: Option<Arc<str>>,
    /// The device bound to the browser session at sign-in.
    pub session_device: Option<Arc<str>>,
    /// The verified client certificate, if the client sent one.
    pub cert: Option<CertIdentity>,
}

impl Subject {
    fn of_request(
        session: &Session,
        principal: &Arc<Principal>,
        source: Option<AuthSource>,
        policy: &RoutePolicy,
    ) -> Self {
        // Routes that ask for no device never look at it: skip the certificate copy.
        let cert = needs_device(policy)
            .then(|| {
                session
                    .digest()
                    .and_then(|d| d.ssl_digest.as_ref())
                    .and_then(|ssl| ssl.extension.get::<ClientCert>())
                    .map(|c| c.0.clone())
            })
            .flatten();
        // A reference count, not a copy: this runs on every request.
        let claim = principal.device_id.clone();
        let (token_device, session_device) = match source {
            Some(AuthSource::Bearer) => (claim, None),
            Some(AuthSource::Session) => (None, claim),
            None => (None, None),
        };
        Self {
            principal: principal.clone(),
            token_device,
            session_device,
            cert,
        }
    }
}

fn needs_device(policy: &RoutePolicy) -> bool {
    matches!(
        policy.require,
        policy::Require::RegisteredDevice | policy::Require::CompliantDevice
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Access {
    /// Decides; `Ok(true)` when a response was written (the request stops here).
    pub async fn decide(
        &self,
        session: &mut Session,
        v: &mut Verdict,
        route_name: &str,
        policy: &RoutePolicy,
        groups_any: &[Arc<str>],
        tls: bool,
    ) -> pingora::Result<bool> {
        let Some(id) = self.identity.as_ref() else {
            // Config refuses protected routes without [entra]; fail closed regardless.
            v.reason = "unauthenticated";
            let p = Problem {
                status: 500,
                reason: "internal_error",
                title: "Internal Server Error",
                detail: "Identity is not configured.",
            };
            v.responded = Some(500);
            respond::write_problem(session, &p, true).await?;
            return Ok(true);
        };
        match auth::authenticate(id, session.req_header()).await {
            AuthOutcome::User(p, source) => {
                v.principal = Some(p);
                v.auth_source = Some(source);
            }
            AuthOutcome::Missing if respond::is_navigation(session.req_header()) => {
                v.reason = Reason::Unauthenticated.as_str();
                v.responded = Some(auth::start_sign_in(id, session, tls).await?);
                return Ok(true);
            }
            AuthOutcome::Missing => {
                v.reason = Reason::Unauthenticated.as_str();
                v.responded = Some(401);
                respond::write_problem_with(
                    session,
                    &auth::unauthenticated(),
                    true,
                    &[auth::www_authenticate(false)],
                )
                .await?;
                return Ok(true);
            }
            AuthOutcome::Invalid(e) => {
                v.reason = e.reason();
                tracing::info!(route = route_name, error = %e, "bearer token refused");
                let detail = refused_token_detail(&e);
                let p = refused_token(&e, &detail);
                v.responded = Some(401);
                respond::write_problem_with(session, &p, true, &[auth::www_authenticate(true)]).await?;
                return Ok(true);
            }
        }
        let Some(principal) = v.principal.clone() else {
            return Ok(false);
        };
        let subject = Subject::of_request(session, &principal, v.auth_source, policy);
        let decision = self.evaluate(id, &subject, policy, groups_any, v).await;
        if let Some(would) = decision.would_deny {
            tracing::warn!(
                route = route_name,
                user = %principal.object_id,
                reason = decision.reason.as_str(),
                would = ?would,
                "report-only: enforcement would have refused this request"
            );
        }
        let Decision {
            outcome: policy::Outcome::Deny(landing),
            reason,
            ..
        } = decision
        else {
            return Ok(false);
        };
        let req = session.req_header();
        let original = original_url(req, tls);
        let answer = self
            .answer(v, &principal, landing, reason, &original, respond::is_navigation(req))
            .await;
        let status = match answer {
            Answer::Redirect { location } => {
                respond::write_redirect(session, 302, &location, &[]).await?;
                302
            }
            Answer::Page { status, html } => {
                respond::write_body(session, status, "text/html; charset=utf-8", html, true).await?;
                status
            }
            Answer::Problem { status, json } => {
                respond::write_body(session, status, "application/problem+json", json, false).await?;
                status
            }
        };
        v.responded = Some(status);
        Ok(true)
    }

    /// Everything after authentication — groups, device, posture, [`policy::decide`] — for the
    /// proxy and for explain alike. Fills `v` with what it used. Never awaits Graph except for
    /// group overage, exactly as a request does.
    pub async fn evaluate(
        &self,
        id: &Identity,
        subject: &Subject,
        policy: &RoutePolicy,
        groups_any: &[Arc<str>],
        v: &mut Verdict,
    ) -> Decision {
        let groups = if groups_any.is_empty() {
            Groups::NotRequired
        } else {
            match auth::check_groups(id, &subject.principal, groups_any).await {
                GroupCheck::Allow => Groups::Member,
                GroupCheck::Deny => Groups::NotMember,
                GroupCheck::Unresolved => Groups::Unresolved,
            }
        };
        v.groups = Some(groups);
        let lookup = if needs_device(policy) {
            self.device(subject, v).await
        } else {
            DeviceLookup::NotNeeded
        };
        v.lookup = lookup.as_str();
        let device = match &lookup {
            DeviceLookup::NotNeeded | DeviceLookup::Unidentified => Device::Unidentified,
            DeviceLookup::Found(source, p) => Device::Identified {
                source: *source,
                posture: Some(p),
            },
            DeviceLookup::Unknown(source) => Device::Identified {
                source: *source,
                posture: None,
            },
            DeviceLookup::Unavailable(source) => Device::Unavailable { source: *source },
        };
        let now = now();
        v.now = now;
        let decision = policy::decide(
            policy,
            &Facts {
                user: User::Authenticated,
                groups,
                device,
                now,
            },
        );
        v.decision = Some(decision);
        decision
    }

    async fn device(&self, subject: &Subject, v: &mut Verdict) -> DeviceLookup {
        let Some(devices) = self.devices.as_ref() else {
            return DeviceLookup::Unidentified;
        };
        let identified = devices
            .identify(
                subject.token_device.as_deref(),
                subject.session_device.as_deref(),
                subject.cert.as_ref(),
            )
            .await;
        let Some((id, source)) = identified else {
            return DeviceLookup::Unidentified;
        };
        v.device = Some((id.clone(), source));
        match devices.cache.lookup(&id).await {
            Ok(Lookup::Found(p)) => {
                v.posture = Some(p.clone());
                DeviceLookup::Found(source, p)
            }
            Ok(Lookup::Unknown) => DeviceLookup::Unknown(source),
            Err(e) => {
                tracing::error!(device = %id, error = %e, "posture lookup failed; refusing (fail closed)");
                DeviceLookup::Unavailable(source)
            }
        }
    }

    /// The answer to a refused request under the current landing choice; the registration
    /// step it names (unrecognized devices only) is left in `v`.
    pub async fn answer(
        &self,
        v: &mut Verdict,
        principal: &Principal,
        landing: Landing,
        reason: Reason,
        original_url: &str,
        navigation: bool,
    ) -> Answer {
        v.registration = match landing {
            Landing::Unrecognized => Some(self.registration(v, principal).await),
            Landing::SignIn | Landing::Remediation | Landing::AccessDenied | Landing::Forbidden | Landing::Stale => {
                None
            }
        };
        let refusal = Refusal {
            kind: landing,
            reason,
            device_id: v.device.as_ref().map(|(d, _)| d.as_str()),
            posture: v.posture.as_deref(),
            registration: v.registration.clone(),
            now: v.now,
            original_url,
        };
        self.landings.load().answer(&refusal, navigation)
    }

    /// Which step an unrecognized device must take (DESIGN.md §2): by the device's posture when
    /// it was identified, else by the user's computers in Jamf inventory.
    async fn registration(&self, v: &Verdict, principal: &Principal) -> Registration {
        if let Some(p) = &v.posture {
            return match &p.state {
                PostureState::NotRegistered { jamf_managed: true } => Registration::Register {
                    computer: p.computer_name.clone(),
                },
                PostureState::NotRegistered { jamf_managed: false }
                | PostureState::Unknown
                | PostureState::Compliant
                | PostureState::InGrace { .. }
                | PostureState::NonCompliant { .. }
                | PostureState::Disabled
                | PostureState::Unsupported { .. } => Registration::Enroll,
            };
        }
        if v.device.is_some() {
            // Identified, but no source knows the device: it must be enrolled.
            return Registration::Enroll;
        }
        let Some(devices) = self.devices.as_ref() else {
            return Registration::Enroll;
        };
        let username = principal.username.as_deref().map(|u| u.split('@').next().unwrap_or(u));
        match devices.store.computers_for_user(&principal.object_id, username).await {
            Ok(computers) => match computers.into_iter().find(|c| c.managed) {
                Some(c) => Registration::Register {
                    computer: c.name.or(c.serial),
                },
                None => Registration::Enroll,
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot look up the user's computers for the landing page");
                Registration::Enroll
            }
        }
    }
}

/// The problem a refused bearer token is answered with (the proxy writes it, explain shows it).
pub fn refused_token<'a>(e: &TokenError, detail: &'a str) -> Problem<'a> {
    Problem {
        status: 401,
        reason: e.reason(),
        title: "Unauthorized",
        detail,
    }
}

pub fn refused_token_detail(e: &TokenError) -> String {
    format!("The bearer token was refused: {e}.")
}

/// `scheme://host/path?query` of the request as the client sent it.
fn original_url(req: &pingora::http::RequestHeader, tls: bool) -> String {
    let here = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let host = req
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or_default();
    format!("{}://{host}{here}", if tls { "https" } else { "http" })
}

enum DeviceLookup {
    NotNeeded,
    Unidentified,
    Found(DeviceSource, Arc<Posture>),
    Unknown(DeviceSource),
    Unavailable(DeviceSource),
}

impl DeviceLookup {
    fn as_str(&self) -> &'static str {
        match self {
            Self::NotNeeded => "not_needed",
            Self::Unidentified => "unidentified",
            Self::Found(..) => "found",
            Self::Unknown(_) => "unknown",
            Self::Unavailable(_) => "unavailable",
        }
    }
}
