#!/usr/bin/env python3
"""The end-user pages in a real browser (issue 14): Debian's Chromium, driven by Playwright for
Python, signs in to `portcullis demo` through the emulator's account picker as each persona and
reads what a person would see — alice reaches the app, bob gets the remediation page with its
Self Service button, carol the registration page naming her Mac, dave the enroll page, erin the
grace notice once and then the app — and then the sign-out round (the button, Entra's logout,
the signed-out page, signing in again), the cookies the gateway sets as the browser stored them,
other sites' attempts to sign the user out, and console errors on every page. Fails (exit 1,
naming each failed check) when the browser is not shown what the demo promises.

The browser trusts only the demo's gateway certificate: the script verifies it against the CA
the demo prints (Python's ssl, hostname included) and hands Chromium that certificate's public
key hash (--ignore-certificate-errors-spki-list); no context ignores HTTPS errors.

Usage: browser_check.py PORTCULLIS_BINARY   (the debug build with the demo feature; run in a venv
with the pins of tests/contract/requirements.txt, Chromium from apt at /usr/bin/chromium)
"""
import atexit
import base64
import calendar
import datetime
import hashlib
import importlib.metadata
import json
import os
import re
import socket
import ssl
import sys
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.sync_api import Error as BrowserError, sync_playwright

import demo
from browser import CHROMIUM, CHROMIUM_ARGS, facts, serve_pages, text
from report import Step, check, failures, started
from demo import CLIENT_ID, EMULATOR, HTTPS, TENANT

DEVICES = {
    "alice": "d1000000-0000-4000-8000-00000000000a",
    "bob": "d1000000-0000-4000-8000-00000000000b",
    "erin": "d1000000-0000-4000-8000-00000000000e",
}
# The gateway's cookies (crates/config/src/build/entra.rs, crates/access/src/grace.rs).
SESSION, LOGIN, GRACE = "__Host-portcullis", "__Host-portcullis-login", "__Host-portcullis-grace"
SIGN_OUT, SIGNED_OUT, CALLBACK = "/.portcullis/sign_out", "/.portcullis/signed_out", "/.portcullis/callback"
WAIT_MS = 15_000
_demo = demo.start(sys.argv[1], 300)
offset, data, work = _demo.offset, _demo.data, demo.work
gateway = f"https://localhost:{HTTPS + offset}"
emulator = f"http://127.0.0.1:{EMULATOR + offset}"
authorize_path = f"/{TENANT}/oauth2/v2.0/authorize"
logout_path = f"/{TENANT}/oauth2/v2.0/logout"
ca_path = _demo.ca_path

# The certificate the gateway presents, verified against the printed CA for the name the browser
# uses; only then is its key given to Chromium as the one to accept. Chromium has no per-launch
# way to add a CA: on Linux it reads trust anchors from the user's NSS database (certutil, not
# installed here, and the user's own browser trust) or from machine-wide policy files; the
# public-key pin is the narrowest trust it takes on its command line.
tls = ssl.create_default_context(cafile=ca_path)
with socket.create_connection(("127.0.0.1", HTTPS + offset), timeout=5) as raw:
    with tls.wrap_socket(raw, server_hostname="localhost") as conn:
        leaf = x509.load_der_x509_certificate(conn.getpeercert(binary_form=True))
spki = leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()


# Another site's pages, each trying to sign the gateway's user out.
OTHER_SITE = {
    "/post": f'<form method="post" action="{gateway}{SIGN_OUT}"><button>Claim your prize</button></form>',
    "/link": f'<a href="{gateway}{SIGN_OUT}">Claim your prize</a>',
    # Requests no user sees: an image and a credentialed fetch.
    "/quiet": f'<img src="{gateway}{SIGN_OUT}" alt=""><script>fetch("{gateway}{SIGN_OUT}", '
    '{method: "POST", mode: "no-cors", credentials: "include"}).finally(() => document.title = "sent")</script>',
}


# Cross-site: plain HTTP on 127.0.0.1. Same site, another origin: HTTPS on localhost, another port,
# with the gateway's own certificate (so Chromium trusts it through the same pin): the sibling
# app a SameSite=Lax cookie does not protect against.
cross_site = f"http://127.0.0.1:{serve_pages(OTHER_SITE)}"
sibling_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
sibling_tls.load_cert_chain(os.path.join(data, "gateway.pem"), os.path.join(data, "gateway-key.pem"))
same_site = f"https://localhost:{serve_pages(OTHER_SITE, sibling_tls)}"


def throwaway_tls():
    """A self-signed certificate for localhost the browser was never told about."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    paths = [os.path.join(work, n) for n in ("other.pem", "other-key.pem")]
    with open(paths[0], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*paths)
    return context


untrusted = f"https://localhost:{serve_pages(OTHER_SITE, throwaway_tls())}"

pw = sync_playwright().start()
atexit.register(pw.stop)
browser = pw.chromium.launch(
    executable_path=CHROMIUM,
    headless=True,
    args=CHROMIUM_ARGS + [f"--ignore-certificate-errors-spki-list={pin}"],
)
atexit.register(browser.close)
console = {}


def new_page(context, label, watch=True):
    """A tab whose console errors and uncaught exceptions are kept under `label` (`watch`: the
    other sites' tabs are not ours to check)."""
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    if not watch:
        return page
    errors = console.setdefault(label, [])

    def on_console(m):
        if m.type == "error":
            errors.append((m.location.get("url") or page.url, m.text))

    page.on("console", on_console)
    page.on("pageerror", lambda e: errors.append((page.url, f"uncaught: {e}")))
    return page


def cookie(context, name):
    return next((c for c in context.cookies(gateway) if c["name"] == name), None)


def chain(response):
    """(request, response) of each hop of one navigation, redirects included, first hop first."""
    out, req = [], response.request
    while req is not None:
        out.append(req)
        req = req.redirected_from
    return [(r, r.response()) for r in reversed(out)]




def set_cookie_ok(header, name, samesite):
    """A Set-Cookie value that meets the __Host- prefix (Secure, Path=/, no Domain) and the rest."""
    parts = [p.strip() for p in header.split(";")]
    attrs = {p.split("=", 1)[0].lower(): (p.split("=", 1) + [""])[1] for p in parts[1:]}
    return (
        parts[0].startswith(name + "=")
        and "secure" in attrs
        and "httponly" in attrs
        and attrs.get("path") == "/"
        and "domain" not in attrs
        and attrs.get("samesite", "").lower() == samesite.lower()
    )


def stored_ok(c, samesite, session_only=False):
    """How Chromium stored a gateway cookie: host-only on localhost (Chromium refuses a __Host-
    cookie otherwise), Secure, HttpOnly, the SameSite given; `session_only`: no expiry."""
    return (
        c is not None
        and c["domain"] == "localhost"
        and c["path"] == "/"
        and c["secure"]
        and c["httpOnly"]
        and c["sameSite"] == samesite
        and ((c["expires"] == -1) if session_only else (c["expires"] > time.time()))
    )


def sign_in(context, persona, path, label):
    """The gateway sends the browser to the account picker; `persona`'s button; back to `path`.
    Returns the page and the gateway's final response for `path`."""
    page = new_page(context, label)
    picker = page.goto(gateway + path)
    hops = chain(picker)
    first = hops[0][1]
    check(
        f"{label}: the gateway sends the browser to sign in (302 to the emulator's authorize)",
        first.status == 302 and first.headers.get("location", "").startswith(emulator + authorize_path),
        f"{first.status} {first.headers.get('location')}",
    )
    login = first.header_values("set-cookie")
    check(
        f"{label}: the sign-in cookie: {LOGIN}, Secure, HttpOnly, SameSite=None (Entra's form_post is cross-site)",
        any(set_cookie_ok(h, LOGIN, "None") for h in login) and stored_ok(cookie(context, LOGIN), "None"),
        f"{login} / stored {cookie(context, LOGIN)}",
    )
    check(
        f"{label}: the account picker (200, 'Pick an account', a button for {persona})",
        picker.status == 200
        and text(page, "h1") == "Pick an account"
        and page.locator(f'button[name="persona"][value="{persona}"]').count() == 1,
        f"{picker.status} {page.url} h1={text(page, 'h1')!r}",
    )
    target = gateway + path
    with page.expect_response(lambda r: r.url == target and r.request.is_navigation_request()) as final:
        with page.expect_response(lambda r: r.url.startswith(gateway + CALLBACK)) as callback:
            page.locator(f'button[name="persona"][value="{persona}"]').click()
    cb = callback.value
    check(
        f"{label}: the callback answers 303 back to {path}",
        cb.status == 303 and cb.headers.get("location") == path,
        f"{cb.status} {cb.headers.get('location')}",
    )
    session = cb.header_values("set-cookie")
    check(
        f"{label}: the session cookie: {SESSION}, Secure, HttpOnly, SameSite=Lax, Path=/, no Domain",
        any(set_cookie_ok(h, SESSION, "Lax") for h in session) and stored_ok(cookie(context, SESSION), "Lax"),
        f"{session} / stored {cookie(context, SESSION)}",
    )
    check(f"{label}: the sign-in cookie is cleared", cookie(context, LOGIN) is None, cookie(context, LOGIN))
    # The response arrives before its document replaces the form_post page: wait for that.
    page.wait_for_url(lambda u: u == target)
    return page, final.value


def app_echo(response):
    try:
        return json.loads(response.text())
    except (ValueError, Exception) as err:  # the app's echo is JSON; anything else is the finding
        return {"unparsed": repr(err)}


def no_console_errors(label, refused=()):
    """No console errors on the gateway's pages of `label`'s tabs, but the one Chromium logs for
    a document answered 403 ("Failed to load resource: … 403"), for the `refused` URLs whose
    403 is the landing page itself. The emulator's pages are checked once, at the end."""
    errs = [
        f"{text} ({url})"
        for url, text in console.get(label, [])
        if not url.startswith(emulator)
        and not (url in refused and text.startswith("Failed to load resource: the server responded with a status of 403"))
    ]
    check(f"{label}: no console errors on the gateway's pages", not errs, errs)


def problem_reason(response):
    """The reason a refusal names, from its problem+json or from its page."""
    body = response.text()
    try:
        return json.loads(body).get("reason")
    except ValueError:
        m = re.search(r"Reason: <code>([a-z_]+)</code>", body)
        return m and m[1]


def still_signed_in(context, persona, why):
    page = new_page(context, f"{persona} after {why}")
    r = page.goto(gateway + "/hello")
    check(
        f"{persona}: still signed in after {why} (the app answers, no sign-in)",
        r.status == 200 and page.url == gateway + "/hello" and app_echo(r).get("app") == "demo-app",
        f"{r.status} {page.url}",
    )
    page.close()


# The pin is the only trust the browser got: any other certificate is still refused.
with Step("trust"):
    ctx = browser.new_context()
    try:
        ctx.new_page().goto(untrusted + "/link")
        refused = "loaded"
    except BrowserError as err:
        refused = str(err).splitlines()[0]
    check(
        "trust: Chromium still refuses a certificate it was not given (ERR_CERT_AUTHORITY_INVALID)",
        "ERR_CERT_AUTHORITY_INVALID" in refused,
        refused,
    )
    ctx.close()

# alice: the app, over HTTP/2 with the demo's certificate, as alice on her Mac.
with Step("alice"):
    ctx = browser.new_context()
    page, r = sign_in(ctx, "alice", "/hello?from=browser", "alice")
    echo = app_echo(r)
    h = echo.get("headers", {})
    check("alice: 200 from the app", r.status == 200 and echo.get("app") == "demo-app", f"{r.status} {echo}")
    check(
        "alice: the app is told alice, compliant, her Mac (bound to the session at sign-in)",
        h.get("x-portcullis-user") == ["alice@contoso.test"]
        and h.get("x-portcullis-decision") == ["compliant"]
        and h.get("x-portcullis-device-id") == [DEVICES["alice"]],
        {k: v for k, v in h.items() if k.startswith("x-portcullis") and k != "x-portcullis-assertion"},
    )
    check(
        "alice: the gateway's cookies never reach the app",
        "portcullis" not in " ".join(h.get("cookie", [])),
        h.get("cookie"),
    )
    sec = r.security_details() or {}
    check(
        "alice: TLS with the demo's certificate (localhost, issued by the development CA)",
        sec.get("subjectName") == "localhost" and sec.get("issuer") == "Portcullis development CA",
        sec,
    )
    proto = page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol")
    check("alice: HTTP/2 to the gateway", proto == "h2", proto)
    no_console_errors("alice")

    # Other sites try to sign alice out: none may.
    for origin, kind in ((cross_site, "another site"), (same_site, "another origin of the same site")):
        p = new_page(ctx, f"alice on {kind}", watch=False)
        p.goto(origin + "/post")
        with p.expect_navigation() as nav:
            p.get_by_role("button", name="Claim your prize").click()
        res = nav.value
        check(
            f"sign-out: a form POST from {kind} ({origin}) is refused: 403 cross_site_request",
            res.status == 403 and res.request.method == "POST" and problem_reason(res) == "cross_site_request",
            f"{res.request.method} {res.url}: {res.status} {res.text()[:200]}",
        )
        check(
            f"sign-out: the person sent from {kind} sees a page saying why (HTML 'Forbidden', not problem+json)",
            res.headers.get("content-type", "").startswith("text/html") and text(p, "h1") == "Forbidden",
            f"{res.url} answered {res.headers.get('content-type')}, the tab shows {p.locator('body').inner_text()[:160]!r}",
        )
        check(
            f"sign-out: the refusal from {kind} leaves the session cookie alone",
            not res.header_values("set-cookie") and cookie(ctx, SESSION) is not None,
            res.header_values("set-cookie"),
        )
        p.close()
        still_signed_in(ctx, "alice", f"a form POST from {kind}")
    p = new_page(ctx, "alice on another site's link", watch=False)
    p.goto(cross_site + "/link")
    with p.expect_navigation() as nav:
        p.get_by_role("link", name="Claim your prize").click()
    res = nav.value
    check(
        "sign-out: another site's link only shows the Sign out page (200, a button, nothing ended)",
        res.status == 200 and text(p, "h1") == "Sign out" and p.get_by_role("button", name="Sign out").count() == 1,
        f"{res.status} h1={text(p, 'h1')!r}",
    )
    p.close()
    still_signed_in(ctx, "alice", "another site's link")
    p = new_page(ctx, "alice on another site's hidden requests", watch=False)
    p.goto(cross_site + "/quiet")
    p.wait_for_function("document.title === 'sent'")
    p.close()
    still_signed_in(ctx, "alice", "another site's image and fetch POST")

    # The sign-out round: the page, its button, Entra's logout, the signed-out page, again.
    page = new_page(ctx, "alice signing out")
    r = page.goto(gateway + SIGN_OUT)
    form = page.locator("form")
    check(
        f"sign-out: GET {SIGN_OUT} shows a page with a Sign out button posting to itself",
        r.status == 200
        and text(page, "h1") == "Sign out"
        and form.count() == 1
        and (form.get_attribute("method") or "").lower() == "post"
        and form.get_attribute("action") == SIGN_OUT
        and page.get_by_role("button", name="Sign out").count() == 1,
        f"{r.status} h1={text(page, 'h1')!r}",
    )
    with page.expect_navigation(url=lambda u: u.startswith(gateway + SIGNED_OUT)) as nav:
        page.get_by_role("button", name="Sign out").click()
    hops = chain(nav.value)
    (post, post_r), rest = hops[0], hops[1:]
    check(
        "sign-out: the button's POST ends the session: 303, the session cookie cleared",
        post.method == "POST"
        and post.url == gateway + SIGN_OUT
        and post_r.status == 303
        and any(h.startswith(SESSION + "=;") and "Max-Age=0" in h for h in post_r.header_values("set-cookie")),
        f"{post.method} {post.url}: {post_r.status} {post_r.header_values('set-cookie')}",
    )
    entra = next((req for req, _ in rest if req.url.startswith(emulator + logout_path)), None)
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(entra.url).query) if entra else {}
    check(
        "sign-out: then Entra's logout, told to come back to the signed-out page",
        q.get("post_logout_redirect_uri") == [gateway + SIGNED_OUT] and q.get("client_id") == [CLIENT_ID],
        [req.url for req, _ in hops],
    )
    check(
        "sign-out: the signed-out page (200, 'You are signed out', 'Sign in again' to /)",
        nav.value.status == 200
        and text(page, "h1") == "You are signed out"
        and page.get_by_role("link", name="Sign in again").get_attribute("href") == "/",
        f"{nav.value.status} {page.url} h1={text(page, 'h1')!r}",
    )
    check("sign-out: the browser holds no session cookie", cookie(ctx, SESSION) is None, cookie(ctx, SESSION))
    with page.expect_navigation(url=lambda u: u.startswith(emulator + authorize_path)) as nav:
        page.get_by_role("link", name="Sign in again").click()
    check(
        "sign-out: 'Sign in again' starts a new sign-in (the account picker)",
        nav.value.status == 200 and text(page, "h1") == "Pick an account",
        f"{nav.value.status} {page.url}",
    )
    with page.expect_response(lambda r: r.url == gateway + "/" and r.request.is_navigation_request()) as final:
        page.locator('button[name="persona"][value="alice"]').click()
    again = final.value
    page.wait_for_url(lambda u: u == gateway + "/")
    check(
        "sign-out: signing in again returns to / and the app",
        again.status == 200 and app_echo(again).get("headers", {}).get("x-portcullis-user") == ["alice@contoso.test"],
        f"{again.status} {page.url}",
    )
    no_console_errors("alice signing out")
    ctx.close()

# bob: the remediation page, with what to fix and the Self Service button.
with Step("bob"):
    ctx = browser.new_context()
    page, r = sign_in(ctx, "bob", "/hello", "bob")
    f = facts(page.locator("section.facts"))
    reasons = page.locator("ul.reasons li").all_inner_texts()
    check(
        "bob: 403, 'Your device needs attention'",
        r.status == 403 and text(page, "h1") == "Your device needs attention",
        f"{r.status} h1={text(page, 'h1')!r}",
    )
    check("bob: what needs attention is listed (FileVault)", any("FileVault" in x for x in reasons), reasons)
    button = page.get_by_role("link", name="Open Self Service")
    check(
        "bob: the Self Service button opens jamfselfservice://",
        button.count() == 1 and button.get_attribute("href") == "jamfselfservice://",
        button.count() and button.get_attribute("href"),
    )
    check(
        "bob: the details name device_noncompliant and his Mac by id and name",
        f.get("Reason") == "device_noncompliant"
        and DEVICES["bob"] in f.get("Device", "")
        and "Bob's MacBook Pro" in f.get("Device", "")
        and f.get("Device data", "").startswith("updated"),
        f,
    )
    no_console_errors("bob", [r.url])
    ctx.close()

# carol: Jamf manages her Mac, Entra does not know it: register it; the Mac was found through
# her account, and every line of the page says so.
with Step("carol"):
    ctx = browser.new_context()
    page, r = sign_in(ctx, "carol", "/hello", "carol")
    f = facts(page.locator("section.facts"))
    lead = text(page, "main > p")
    check(
        "carol: 403, the registration page ('Register this Mac')",
        r.status == 403 and text(page, "h1") == "Register this Mac",
        f"{r.status} h1={text(page, 'h1')!r}",
    )
    check(
        "carol: the page under the heading names her Mac",
        "Carol's MacBook Pro" in (lead or "") and "not yet registered with Microsoft Entra ID" in (lead or ""),
        lead,
    )
    button = page.get_by_role("link", name="Open Self Service")
    check(
        "carol: the Self Service button opens the registration policy",
        button.count() == 1
        and button.get_attribute("href") == "jamfselfservice://content?entity=policy&id=42&action=view",
        button.count() and button.get_attribute("href"),
    )
    check(
        "carol: the details say the Mac was found through her account in Jamf Pro",
        f.get("Device", "").startswith("Carol's MacBook Pro (found through your account in Jamf Pro")
        and f.get("Device data") == "Jamf Pro inventory only",
        f,
    )
    body = page.locator("body").inner_text()
    check(
        "carol: nothing on the page says the device was not identified or unknown",
        "not identified" not in body and "no data about this device" not in body,
        f,
    )
    no_console_errors("carol", [r.url])
    ctx.close()

# dave: no one manages his Mac: enroll it.
with Step("dave"):
    ctx = browser.new_context()
    page, r = sign_in(ctx, "dave", "/hello", "dave")
    f = facts(page.locator("section.facts"))
    check(
        "dave: 403, 'Enroll this Mac'",
        r.status == 403 and text(page, "h1") == "Enroll this Mac",
        f"{r.status} h1={text(page, 'h1')!r}",
    )
    button = page.get_by_role("link", name="Enroll this Mac")
    check(
        "dave: the Enroll button opens the enrollment URL",
        button.count() == 1 and button.get_attribute("href") == "https://jamf.contoso.test/enroll",
        button.count() and button.get_attribute("href"),
    )
    check("dave: the details name the reason", f.get("Reason", "").startswith("device_"), f)
    no_console_errors("dave", [r.url])
    ctx.close()

MONTHS = {m: i for i, m in enumerate(calendar.month_name) if m}

# erin: Intune's grace period: told by when, once per browser session, then the app.
with Step("erin"):
    ctx = browser.new_context()
    page, r = sign_in(ctx, "erin", "/hello?x=1", "erin")
    check(
        "erin: the grace notice first (200, 'Your device needs attention soon')",
        r.status == 200 and text(page, "h1") == "Your device needs attention soon",
        f"{r.status} h1={text(page, 'h1')!r}",
    )
    told = text(page, "strong") or ""
    m = re.fullmatch(r"(\d{1,2}) (\w+) (\d{4}), (\d\d):(\d\d) UTC", told)
    until = (
        calendar.timegm((int(m[3]), MONTHS.get(m[2], 0), int(m[1]), int(m[4]), int(m[5]), 0)) if m else None
    )
    check("erin: the notice names the deadline, in the future", until is not None and until > time.time(), told)
    cont = page.get_by_role("link", name="Continue")
    href = cont.get_attribute("href") if cont.count() else None
    check(
        "erin: Continue goes through /.portcullis/grace_ack back to /hello?x=1",
        (href or "").startswith("/.portcullis/grace_ack?return_to=%2Fhello%3Fx%3D1&until="),
        href,
    )
    with page.expect_navigation() as nav:
        cont.click()
    hops = chain(nav.value)
    ack = hops[0][1]
    check(
        "erin: the grace cookie: __Host-portcullis-grace, Secure, HttpOnly, SameSite=Lax, for the browser session",
        any(set_cookie_ok(h, GRACE, "Lax") for h in ack.header_values("set-cookie"))
        and stored_ok(cookie(ctx, GRACE), "Lax", session_only=True),
        f"{ack.header_values('set-cookie')} / stored {cookie(ctx, GRACE)}",
    )
    echo = app_echo(nav.value)
    h = echo.get("headers", {})
    ends = (h.get("x-portcullis-grace-ends") or [""])[0]
    check(
        "erin: Continue shows the app at /hello?x=1, flagged device_in_grace",
        nav.value.status == 200
        and page.url == gateway + "/hello?x=1"
        and h.get("x-portcullis-decision") == ["device_in_grace"]
        and h.get("x-portcullis-device-id") == [DEVICES["erin"]],
        f"{nav.value.status} {page.url} {h.get('x-portcullis-decision')}",
    )
    try:
        ends_at = calendar.timegm(time.strptime(ends, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        ends_at = None
    check(
        "erin: the app sees X-Portcullis-Grace-Ends, the deadline the notice named",
        ends_at is not None and until is not None and ends_at // 60 * 60 == until,
        f"header {ends!r}, page {told!r}",
    )
    check(
        "erin: the gateway's cookies never reach the app",
        "portcullis" not in " ".join(h.get("cookie", [])),
        h.get("cookie"),
    )
    r = page.goto(gateway + "/elsewhere")
    check(
        "erin: told once per session: the next page is the app",
        r.status == 200 and app_echo(r).get("headers", {}).get("x-portcullis-decision") == ["device_in_grace"],
        f"{r.status} h1={text(page, 'h1')!r}",
    )
    no_console_errors("erin")
    ctx.close()
    # Another browser session is told again.
    ctx = browser.new_context()
    page, r = sign_in(ctx, "erin", "/hello", "erin, next session")
    check(
        "erin: a new browser session is told again",
        r.status == 200 and text(page, "h1") == "Your device needs attention soon",
        f"{r.status} h1={text(page, 'h1')!r}",
    )
    no_console_errors("erin, next session")
    ctx.close()

# A sign-in that comes back without its sign-in cookie (it expired after 10 minutes, or the
# browser dropped it): refused, and the person is shown a page, as for any browser navigation.
with Step("a sign-in that lost its cookie"):
    ctx = browser.new_context()
    page = new_page(ctx, "a sign-in that lost its cookie")
    page.goto(gateway + "/hello")
    ctx.clear_cookies(name=LOGIN)
    with page.expect_response(lambda r: r.url.startswith(gateway + CALLBACK)) as callback:
        page.locator('button[name="persona"][value="alice"]').click()
    res = callback.value
    page.wait_for_url(lambda u: u.startswith(gateway + CALLBACK))
    check(
        "sign-in without its cookie: refused with 400 sign_in_failed",
        res.status == 400 and problem_reason(res) == "sign_in_failed",
        f"{res.status} {res.text()[:200]}",
    )
    check(
        "sign-in without its cookie: the person sees a page saying so (HTML 'Sign-in failed', not problem+json)",
        res.headers.get("content-type", "").startswith("text/html") and text(page, "h1") == "Sign-in failed",
        f"{res.url} answered {res.headers.get('content-type')}, the tab shows {page.locator('body').inner_text()[:160]!r}",
    )
    ctx.close()

# Once for all rounds: Chromium asks a host for its favicon once per run, on its first page.
emulator_errors = sorted({f"{t} ({u})" for errs in console.values() for u, t in errs if u.startswith(emulator)})
check("the emulator's pages (account picker, form_post, logout): no console errors", not emulator_errors, emulator_errors)

took = time.monotonic() - started
print(
    f"Chromium {browser.version}, Playwright {importlib.metadata.version('playwright')}, "
    f"{took:.1f} s: {'all checks passed' if not failures else str(len(failures)) + ' failed: ' + '; '.join(failures)}"
)
sys.exit(1 if failures else 0)
