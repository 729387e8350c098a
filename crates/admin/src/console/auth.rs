//! Signing in to the console and out of it: the admin or read-only token pasted once, or
//! Microsoft (the gateway's app and the API's app roles, through Entra's code flow with its
//! form_post), each opening a server-side session ([`super::session`]).

use super::*;

#[derive(Deserialize)]
pub(super) struct Next {
    next: Option<String>,
    signed_out: Option<String>,
}

/// Only console paths: never another site.
pub(super) fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/console/") && !n.starts_with("//") && !n.contains('\\') => n,
        Some(_) | None => "/console/",
    }
}

pub(super) async fn sign_in_page(State(c): C, Query(q): Query<Next>) -> Response {
    if q.signed_out.is_some() {
        return c.pages.signed_out();
    }
    c.pages.sign_in(StatusCode::OK, safe_next(q.next.as_deref()), None)
}

#[derive(Deserialize)]
pub(super) struct SignIn {
    token: String,
    next: Option<String>,
}

pub(super) async fn sign_in(State(c): C, headers: HeaderMap, Form(f): Form<SignIn>) -> Response {
    let next = safe_next(f.next.as_deref());
    if session::cross_site(&headers) {
        return c.pages.sign_in(
            StatusCode::FORBIDDEN,
            next,
            Some("This sign-in was sent from another site."),
        );
    }
    let mut bearer = HeaderMap::new();
    let Ok(value) = HeaderValue::from_str(&format!("Bearer {}", f.token.trim())) else {
        return c
            .pages
            .sign_in(StatusCode::UNAUTHORIZED, next, Some("That token is not valid here."));
    };
    bearer.insert(header::AUTHORIZATION, value);
    let caller = match api::authenticate(&c.api, &bearer).await {
        Ok(caller) => caller,
        Err(_) => {
            return c
                .pages
                .sign_in(StatusCode::UNAUTHORIZED, next, Some("That token is not valid here."))
        }
    };
    let cookie = match c.open_session(caller, "token", next).await {
        Ok(cookie) => cookie,
        Err(r) => return r,
    };
    let mut r = Redirect::to(next).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session::set_cookie(&headers, Some(&cookie)));
    r
}

/// Where Entra sends the browser back: this console's callback, on the host the browser used
/// (Entra accepts only redirect URIs registered on the app, so a forged Host gets nowhere).
pub(super) fn redirect_uri(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let tls = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    format!("{}://{host}/console/callback", if tls { "https" } else { "http" })
}

pub(super) async fn sign_in_entra(State(c): C, headers: HeaderMap, Query(q): Query<Next>) -> Response {
    let next = safe_next(q.next.as_deref());
    let Some(id) = c.identity.as_ref().map(|c| c.load()) else {
        return c.pages.sign_in(
            StatusCode::NOT_FOUND,
            next,
            Some("Sign-in with Microsoft needs an [entra] section."),
        );
    };
    match id.oidc.start(&id.sealer, &redirect_uri(&headers), next) {
        Ok(start) => {
            let mut r = Redirect::to(&start.authorize_url).into_response();
            r.headers_mut().insert(
                header::SET_COOKIE,
                session::set_login_cookie(&headers, Some(&start.login_cookie)),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "console sign-in with Entra cannot start");
            c.pages.sign_in(
                StatusCode::SERVICE_UNAVAILABLE,
                next,
                Some("Sign-in with Microsoft cannot start; try again."),
            )
        }
    }
}

/// Entra's form_post: the code, redeemed with the sealed state; the ID token's app roles make
/// the caller, as the API honours them.
pub(super) async fn callback(State(c): C, headers: HeaderMap, Form(params): Form<Vec<(String, String)>>) -> Response {
    let Some(id) = c.identity.as_ref().map(|c| c.load()) else {
        return c.pages.sign_in(
            StatusCode::NOT_FOUND,
            "/console/",
            Some("Sign-in with Microsoft needs an [entra] section."),
        );
    };
    let (session, next) = match id
        .oidc
        .finish(&id.sealer, session::login_cookie(&headers), &params)
        .await
    {
        Ok(done) => done,
        Err(e) => {
            tracing::warn!(error = %e, "console sign-in with Entra failed");
            let mut r = c.pages.sign_in(
                StatusCode::BAD_REQUEST,
                "/console/",
                Some(&format!("Sign-in with Microsoft failed: {e}.")),
            );
            r.headers_mut()
                .insert(header::SET_COOKIE, session::set_login_cookie(&headers, None));
            return r;
        }
    };
    let next = safe_next(Some(&next)).to_string();
    let caller = match api::caller_of(&c.api, &id.validator, &session.principal) {
        Ok(caller) => caller,
        Err(refused) => {
            let text = refused.to_string();
            let mut r = c.pages.sign_in(StatusCode::FORBIDDEN, &next, Some(&text));
            r.headers_mut()
                .insert(header::SET_COOKIE, session::set_login_cookie(&headers, None));
            return r;
        }
    };
    let cookie = match c.open_session(caller, "entra", &next).await {
        Ok(cookie) => cookie,
        Err(r) => return r,
    };
    // A page of ours moves on: the SameSite=Strict session cookie is not sent on a navigation
    // that a cross-site POST (Entra's) started, so a redirect here would land signed out.
    let mut r = c.pages.continue_to(&next);
    let h = r.headers_mut();
    h.append(header::SET_COOKIE, session::set_cookie(&headers, Some(&cookie)));
    h.append(header::SET_COOKIE, session::set_login_cookie(&headers, None));
    r
}

pub(super) async fn sign_out(State(c): C, headers: HeaderMap, Form(f): Form<CsrfOnly>) -> Response {
    if form_session(&c, &headers, f.csrf.as_deref()).await.is_ok() {
        if let Some(cookie) = session::cookie(&headers) {
            if let Err(e) = c.api.store.remove_session(&session::key(cookie)).await {
                tracing::warn!(error = %e, "console sign-out: cannot remove the session row (it expires by itself)");
            }
        }
    }
    let mut r = Redirect::to("/console/sign-in?signed_out=1").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session::set_cookie(&headers, None));
    r
}
