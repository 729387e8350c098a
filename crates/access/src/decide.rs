//! The access decision on the request path: authenticate (bearer or session; sign-in or 401
//! when missing), check groups, identify the device, look up its posture (cache, then store
//! under a timeout; never Graph), call the pure [`policy::decide`], and answer refusals with
//! the landing the decision names. Everything the decision used is left in [`Verdict`] for the
//! identity headers and the decision log.

use std::sync::Arc;

use crate::auth::{self, AuthOutcome, AuthSource, GroupCheck};
use crate::{Problem, Reply, RequestInfo};
use device::identify::CertIdentity;
use device::{Devices, Lookup};
use identity::{CurrentIdentity, Identity, Principal, TokenError};
use landing::{Answer, Landings, Refusal, Registration};
use policy::{
    self, Decision, Device, DeviceSource, Facts, Groups, Landing, Posture, PostureState, Reason, RoutePolicy, User,
};

/// The components the decision needs.
pub struct Access {
    /// The identity in force (a reload of `[entra]` replaces it); `None` without `[entra]`.
    pub identity: Option<Arc<CurrentIdentity>>,
    pub devices: Option<Arc<Devices>>,
    /// Replaced when the landing choice changes in the settings.
    pub landings: Arc<arc_swap::ArcSwap<Landings>>,
    pub assertions: Arc<crate::assertion::AssertionSigner>,
    /// Open WebSockets of device-enforcing routes, decided again when their device changes.
    pub live: Arc<crate::live::LiveConnections>,
}

/// What was decided, and on what grounds.
#[derive(Default)]
pub struct Verdict {
    pub principal: Option<Arc<Principal>>,
    pub auth_source: Option<AuthSource>,
    /// The browser session the request came with, if it came with one.
    pub session: Option<String>,
    pub device: Option<(String, DeviceSource)>,
    pub posture: Option<Arc<Posture>>,
    pub decision: Option<Decision>,
    /// Why the request was answered or passed without a decision, if it was.
    pub early: Option<Early>,
    /// Status written by the gateway itself, if it answered.
    pub responded: Option<u16>,
    /// The group check, once made.
    pub groups: Option<Groups>,
    /// How the posture look-up went, once made.
    pub lookup: Option<PostureLookup>,
    /// The registration step a refusal of an unrecognized device names.
    pub registration: Option<Registration>,
    /// The time the decision was taken at (Unix seconds).
    pub now: u64,
}

/// Why a request was answered, or let through, before a policy decision was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Early {
    /// The route requires nothing.
    OpenRoute,
    /// Authentication answered: a sign-in redirect or 401 ([`Reason::Unauthenticated`]), or a
    /// refused token ([`Reason::TokenInvalid`]).
    Auth(Reason),
    /// One of the gateway's own endpoints (`/.portcullis/…`).
    GatewayEndpoint,
    /// Refused before routing or access; the problem's reason (`bad_path`, `no_route`, …).
    Refused(&'static str),
}

impl Early {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenRoute => Reason::OpenRoute.as_str(),
            Self::Auth(r) => r.as_str(),
            Self::GatewayEndpoint => "gateway_endpoint",
            Self::Refused(reason) => reason,
        }
    }
}

impl Verdict {
    /// The reason code of the decision log: the decision's, else why none was taken.
    pub fn reason(&self) -> &'static str {
        match (self.decision, self.early) {
            (Some(d), _) => d.reason.as_str(),
            (None, Some(e)) => e.as_str(),
            (None, None) => "",
        }
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
        req: &RequestInfo<'_>,
        principal: &Arc<Principal>,
        source: Option<AuthSource>,
        policy: &RoutePolicy,
    ) -> Self {
        // Routes that ask for no device never look at it: skip the certificate copy.
        let cert = needs_device(policy).then(|| req.client_cert.cloned()).flatten();
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

pub(crate) fn needs_device(policy: &RoutePolicy) -> bool {
    matches!(
        policy.require,
        policy::Require::RegisteredDevice | policy::Require::CompliantDevice
    )
}

impl Access {
    /// The identity in force, loaded once for what one request does.
    pub fn identity(&self) -> Option<Arc<Identity>> {
        self.identity.as_ref().map(|c| c.load())
    }

    /// Decides. `None`: forward the request upstream. `Some(reply)`: answer it with `reply`
    /// (sign-in, 401, a refusal's landing). `v` keeps what the decision rested on.
    pub async fn decide<U>(&self, req: &RequestInfo<'_>, v: &mut Verdict, route: &crate::Route<U>) -> Option<Reply> {
        let (route_name, policy, groups_any) = (route.name.as_str(), &route.policy, &route.groups_any[..]);
        let Some(id) = self.identity() else {
            // Config refuses protected routes without [entra]; fail closed regardless.
            v.early = Some(Early::Auth(Reason::Unauthenticated));
            let p = Problem::new(
                500,
                "internal_error",
                "Internal Server Error",
                "Identity is not configured.",
            );
            return Some(Reply::problem(p));
        };
        let id: &identity::Identity = &id;
        let (principal, source) = match auth::authenticate(id, &req.parts.headers).await {
            AuthOutcome::User(p, source, session) => {
                v.session = session;
                (p, source)
            }
            AuthOutcome::Missing if req.navigation => {
                v.early = Some(Early::Auth(Reason::Unauthenticated));
                return Some(auth::start_sign_in(id, req));
            }
            AuthOutcome::Missing => {
                v.early = Some(Early::Auth(Reason::Unauthenticated));
                return Some(Reply::Problem {
                    problem: auth::unauthenticated(),
                    close: false,
                    headers: vec![auth::www_authenticate(false)],
                });
            }
            AuthOutcome::SessionsUnavailable => {
                v.early = Some(Early::Refused("sign_in_unavailable"));
                return Some(auth::sessions_unavailable());
            }
            AuthOutcome::Invalid(e) => {
                v.early = Some(Early::Auth(Reason::TokenInvalid));
                tracing::info!(route = route_name, error = %e, "bearer token refused");
                return Some(Reply::Problem {
                    problem: refused_token(&e),
                    close: false,
                    headers: vec![auth::www_authenticate(true)],
                });
            }
        };
        v.principal = Some(principal.clone());
        v.auth_source = Some(source);
        let subject = Subject::of_request(req, &principal, Some(source), policy);
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
            // Allowed; a device in its grace period may first be told by when to fix it.
            return route.grace_notice.then(|| crate::grace::notice(req, v)).flatten();
        };
        let answer = self
            .answer(v, &principal, landing, reason, &req.original_url(), req.navigation)
            .await;
        Some(match answer {
            Answer::Redirect { location } => Reply::Redirect {
                status: 302,
                location,
                headers: Vec::new(),
            },
            Answer::Page { status, html } => Reply::Body {
                status,
                content_type: "text/html; charset=utf-8",
                body: html,
            },
            Answer::Problem { status, json } => Reply::Body {
                status,
                content_type: "application/problem+json",
                body: json,
            },
        })
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
        v.lookup = Some(lookup.kind());
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
        let now = base::time::unix_now();
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
                    computer: p.computer_name.as_deref().map(str::to_string),
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
        let timeout = devices.cache.lookup_timeout();
        let computers = tokio::time::timeout(
            timeout,
            devices.store.computers_for_user(&principal.object_id, username),
        )
        .await
        .unwrap_or(Err(store::StoreError::Timeout(timeout)));
        match computers {
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
pub fn refused_token(e: &TokenError) -> Problem {
    Problem {
        status: 401,
        reason: e.reason(),
        title: "Unauthorized",
        detail: refused_token_detail(e).into(),
    }
}

pub fn refused_token_detail(e: &TokenError) -> String {
    format!("The bearer token was refused: {e}.")
}

enum DeviceLookup {
    NotNeeded,
    Unidentified,
    Found(DeviceSource, Arc<Posture>),
    Unknown(DeviceSource),
    Unavailable(DeviceSource),
}

impl DeviceLookup {
    fn kind(&self) -> PostureLookup {
        match self {
            Self::NotNeeded => PostureLookup::NotNeeded,
            Self::Unidentified => PostureLookup::Unidentified,
            Self::Found(..) => PostureLookup::Found,
            Self::Unknown(_) => PostureLookup::Unknown,
            Self::Unavailable(_) => PostureLookup::Unavailable,
        }
    }
}

/// How a request's posture look-up went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostureLookup {
    /// The route asks for no device.
    NotNeeded,
    /// No configured source identified the device.
    Unidentified,
    Found,
    /// Identified, but no source knows the device.
    Unknown,
    /// The store could not answer in time (fail closed).
    Unavailable,
}

impl PostureLookup {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotNeeded => "not_needed",
            Self::Unidentified => "unidentified",
            Self::Found => "found",
            Self::Unknown => "unknown",
            Self::Unavailable => "unavailable",
        }
    }
}
