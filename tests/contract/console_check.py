#!/usr/bin/env python3
"""The admin console (`/console/` on the admin listener) in a real browser: Debian's Chromium,
driven by Playwright for Python, against `portcullis demo` — signing in with the admin and the
read-only tokens, the sync's health, the Conditional Access settings (read, Edit, Save with Run
Test, a wrong then the right client secret, Run Test, Send Update and its job), computers with
their Conditional Access inventory state and history, What If, the audit trail, a reader's
limits, CSRF and other sites' forms, a stale edit, signing out, and a phone's width. Every page
visited is also screenshotted into target/console-screenshots/NN-name.png and audited: no
console errors, no horizontal scroll, every form control labelled, text contrast (WCAG AA), no
client secret in its HTML. Fails (exit 1, naming each failed check) when the browser is not
shown what the console promises.

Usage: console_check.py PORTCULLIS_BINARY   (the debug build with the demo feature; run in the
venv target/contract-venv, Chromium from apt at /usr/bin/chromium)
"""
import atexit
import importlib.metadata
import json
import os
import re
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from playwright.sync_api import sync_playwright

import demo
from browser import CHROMIUM, CHROMIUM_ARGS, facts, serve_pages, text
from report import Step, check, failures, poll_until, started
from demo import CLIENT_ID, TENANT

WAIT_MS = 10_000
COOKIE = "__Host-portcullis-console"
# The demo's secret (crates/emulator/src/personas.rs) and two that must never be echoed.
SECRET = "portcullis-demo-secret"
WRONG = "wrong-" + secrets.token_urlsafe(9)
TYPED = "typed-" + secrets.token_urlsafe(9)
BOB = "d1000000-0000-4000-8000-00000000000b"
BOB_UPN = "bob@contoso.test"
# The emulator's answer to a wrong secret, as Run Test explains it (crates/sync/src/test_connection.rs).
WRONG_SECRET_TEXT = "The client secret is wrong. Paste the secret's value, not its ID."
# `[sync] share` of config/demo.toml.
SHARED = {
    "extensionAttribute10": "jamf:{managed}",
    "extensionAttribute11": "{os_version}",
    "extensionAttribute12": "{filevault}",
}
JAMF_DL = 'section[aria-labelledby="src-jamf"] dl'
LANDING_DL = 'section[aria-labelledby="landing"] dl'
SHARED_NOTE = 'section[aria-labelledby="shared"] p.small'
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHOTS = os.path.join(ROOT, "target", "console-screenshots")

d = demo.start(sys.argv[1], 800)
admin_token = d.printed("admin token: ")
reader_token = d.printed("read-only token: ")
admin_url = f"http://127.0.0.1:{d.port(demo.ADMIN)}"
console = admin_url + "/console"
emulator = f"http://127.0.0.1:{d.port(demo.EMULATOR)}"
app_url = f"http://127.0.0.1:{d.port(demo.HTTP)}/hello"


def api(path, method="GET", body=None, token=None):
    """The admin API straight (what the console shows is checked against it)."""
    req = urllib.request.Request(
        admin_url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"authorization": f"Bearer {token or admin_token}", "content-type": "application/json"},
    )
    try:
        r = demo.direct.open(req, timeout=30)
        status, headers, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, headers, raw = e.code, e.headers, e.read()
    try:
        return status, headers, json.loads(raw or b"null")
    except ValueError:
        return status, headers, raw.decode(errors="replace")


def emulator_post(path, body=None, method="POST"):
    req = urllib.request.Request(
        emulator + path, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    return demo.direct.open(req, timeout=10).status


def audit_actions(who=None):
    _, _, page = api("/api/v1/audit?limit=200")
    return [e["action"] for e in page["items"] if who is None or e["actor"] == who]


# Another site's page with a form that tries to run the console's Run Test.
other = serve_pages({
    "/run-test": f'<form method="post" action="{console}/conditional-access/test">'
    '<input type="hidden" name="csrf" value="guessed"><button>Claim your prize</button></form>',
})
# Another site (another host: SameSite=Strict cookies stay home), and another origin of the
# same site (127.0.0.1 on another port: the browser sends the cookie, Sec-Fetch-Site says so).
cross_site = f"http://localhost:{other}"
same_site = f"http://127.0.0.1:{other}"

os.makedirs(SHOTS, exist_ok=True)
for old in os.listdir(SHOTS):
    if old.endswith(".png"):
        os.remove(os.path.join(SHOTS, old))

pw = sync_playwright().start()
atexit.register(pw.stop)
browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
atexit.register(browser.close)

console_errors = {}  # label -> [(url, text)]
html_seen = {}  # screenshot name -> HTML
audit_issues = {"unlabelled": [], "contrast": [], "unnamed": [], "structure": [], "overflow": []}
shot_count = [0]

AUDIT_JS = r"""
() => {
  const out = {unlabelled: [], contrast: [], unnamed: [], structure: []};
  const visible = el => {
    const s = getComputedStyle(el);
    if (s.visibility === 'hidden' || s.display === 'none') return false;
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  };
  const rgba = c => {
    const m = /rgba?\(([^)]+)\)/.exec(c || '');
    if (!m) return null;
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(parseFloat);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, bottom) => [0, 1, 2].map(i => top[i] * top[3] + bottom[i] * (1 - top[3])).concat([1]);
  const background = el => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let base = [255, 255, 255, 1];
    for (let i = layers.length - 1; i >= 0; i--) base = over(layers[i], base);
    return base;
  };
  const lum = c => {
    const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const hex = c => '#' + c.slice(0, 3).map(v => Math.round(v).toString(16).padStart(2, '0')).join('');
  window.__contrast = {background, ratio, rgba, hex, over};
  const name = el => {
    let s = el.tagName.toLowerCase();
    if (el.id) s += '#' + el.id;
    if (el.className && typeof el.className === 'string') s += '.' + el.className.trim().split(/\s+/).join('.');
    return s;
  };
  const seen = new Set();
  for (const el of document.body.querySelectorAll('*')) {
    if (['SCRIPT', 'STYLE', 'NOSCRIPT', 'OPTION', 'svg', 'path', 'rect'].includes(el.tagName)) continue;
    if (el.closest('[aria-hidden="true"]')) continue;
    const text = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
    if (!text || !visible(el)) continue;
    const s = getComputedStyle(el);
    const bg = background(el);
    let fg = rgba(s.color);
    if (!fg) continue;
    if (fg[3] < 1) fg = over(fg, bg);
    const size = parseFloat(s.fontSize), weight = parseInt(s.fontWeight, 10) || 400;
    const large = size >= 24 || (size >= 18.66 && weight >= 700);
    const r = ratio(fg, bg);
    const need = large ? 3 : 4.5;
    if (r < need - 0.005) {
      const key = name(el) + hex(fg) + hex(bg);
      if (!seen.has(key)) {
        seen.add(key);
        out.contrast.push(`${name(el)} "${text.slice(0, 30)}" ${hex(fg)} on ${hex(bg)} = ${r.toFixed(2)}:1 (needs ${need}:1)`);
      }
    }
  }
  for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
    if (!visible(el)) continue;
    const named = (el.labels && el.labels.length && [...el.labels].some(l => l.textContent.trim()))
      || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') || el.title;
    if (!named) out.unlabelled.push(el.outerHTML.slice(0, 120));
  }
  for (const el of document.querySelectorAll('a[href], button')) {
    if (!visible(el)) continue;
    if (!(el.innerText || '').trim() && !el.getAttribute('aria-label') && !el.title) out.unnamed.push(el.outerHTML.slice(0, 120));
  }
  const ids = {};
  for (const el of document.querySelectorAll('[id]')) ids[el.id] = (ids[el.id] || 0) + 1;
  const dups = Object.keys(ids).filter(k => ids[k] > 1);
  if (dups.length) out.structure.push('duplicate ids: ' + dups.join(', '));
  const h1 = document.querySelectorAll('h1').length;
  if (h1 !== 1) out.structure.push(`${h1} h1 elements`);
  if (!document.documentElement.lang) out.structure.push('no lang on <html>');
  if (!document.title.trim() || document.title.trim().startsWith('·')) out.structure.push(`title ${JSON.stringify(document.title)}`);
  out.scroll = [document.documentElement.scrollWidth, window.innerWidth];
  return out;
}
"""


def new_page(context, label, watch=True):
    """A tab whose console errors and uncaught exceptions are kept under `label` (`watch`:
    another site's tabs are not ours to check). Chromium logs a page that answers 4xx as
    "Failed to load resource" for the document itself: those pages are asked for on purpose
    (a refusal, a 404) and their status is checked; for a stylesheet, a script or a fetch the
    message counts."""
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    if not watch:
        return page
    errors = console_errors.setdefault(label, [])

    def on_console(m):
        if m.type != "error":
            return
        url = m.location.get("url") or page.url
        if m.text.startswith("Failed to load resource") and url == page.url:
            return
        errors.append((url, m.text))

    page.on("console", on_console)
    page.on("pageerror", lambda e: errors.append((page.url, f"uncaught: {e}")))
    return page


def look(page, name):
    """A page visited: its full-page screenshot, its HTML kept, its audit."""
    shot_count[0] += 1
    page.screenshot(path=os.path.join(SHOTS, f"{shot_count[0]:02d}-{name}.png"), full_page=True)
    html_seen[f"{shot_count[0]:02d}-{name}"] = page.content()
    where = f"{name} ({urllib.parse.urlsplit(page.url).path})"
    a = page.evaluate(AUDIT_JS)
    for kind in ("unlabelled", "contrast", "unnamed", "structure"):
        audit_issues[kind] += [f"{where}: {x}" for x in a[kind]]
    width, inner = a["scroll"]
    if width > inner + 1:
        audit_issues["overflow"].append(f"{where}: scrollWidth {width} > innerWidth {inner}")
    return a




def chain(response):
    out, req = [], response.request
    while req is not None:
        out.append(req)
        req = req.redirected_from
    return [(r, r.response()) for r in reversed(out)]


def submit(page, button, scope=None):
    """Clicks a submit button (its name, or a pattern) and returns the navigation's (final)
    response."""
    exact = {"exact": True} if isinstance(button, str) else {}
    with page.expect_navigation() as nav:
        (scope or page).get_by_role("button", name=button, **exact).click()
    return nav.value


# The token form's button ("Sign in", or "Sign in with the token" beside Sign in with Microsoft).
SIGN_IN = re.compile(r"^Sign in( with the token)?$")


def sign_in(ctx, token, label, path="/"):
    page = new_page(ctx, label)
    page.goto(console + path)
    page.fill("#token", token)
    return page, submit(page, SIGN_IN)


def steps(page):
    """Run Test's report: [(status badge, step name, message)]."""
    out = []
    for li in page.locator("ol.steps li").all():
        out.append((
            li.locator(".badge").first.inner_text().strip(),
            li.locator(".step-name").inner_text().strip(),
            li.locator(".step-message").inner_text().strip(),
        ))
    return out


def badge(page, section_id):
    loc = page.locator(f'section[aria-labelledby="{section_id}"] .badge')
    return loc.first.inner_text().strip() if loc.count() else None


def csrf_of(page):
    return page.locator('input[name="csrf"]').first.get_attribute("value")


def settings_form(csrf, landing="registration", etag=None):
    """The Edit form's fields as a browser sends them, from the API's current settings."""
    _, headers, s = api("/api/v1/conditional-access")
    return {
        "csrf": csrf,
        "etag": etag or headers.get("etag", ""),
        "enabled": "on",
        "connection_type": s["connection_type"],
        "national_cloud": s["national_cloud"],
        "tenant_id": s["tenant_id"],
        "application_id": s["application_id"],
        "client_secret": "",
        "landing": landing,
        "landing_url": "",
        "shared_attributes": "".join(
            f"{k} = {v}\n" for k, v in ((s.get("shared_attributes") or {}).get("attributes") or SHARED).items()
        ),
    }


def rows(page):
    return [" ".join(t.split()) for t in page.locator("table tbody tr td:first-child a").all_inner_texts()]


def no_console_errors(label, *labels):
    errs = [e for l in (label,) + labels for e in console_errors.get(l, [])]
    return check(f"{label}: no console errors", not errs, errs[:5])


anon = browser.new_context()
admin = browser.new_context(viewport={"width": 1280, "height": 800})
admin_page = None

# 1. Not signed in.
with Step("1 not signed in"):
    page = new_page(anon, "not signed in")
    r = page.goto(console + "/")
    hops = chain(r)
    first = hops[0][1]
    check(
        "1 not signed in: /console/ redirects (303) to the sign-in page, to come back to /console/",
        first.status in (302, 303, 307)
        and page.url == console + "/sign-in?next=%2Fconsole%2F"
        and r.status == 200
        and text(page, "h1") == "Sign in",
        f"{[(q.url, s.status if s else None) for q, s in hops]} h1={text(page, 'h1')!r}",
    )
    look(page, "sign-in")
    page.fill("#token", "not-the-token")
    r = submit(page, SIGN_IN)
    check(
        "1 not signed in: a wrong token is refused with 401 and an error on the sign-in page",
        r.status == 401
        and text(page, '[role="alert"]') == "That token is not valid here."
        and page.locator("#token").count() == 1
        and not anon.cookies(admin_url),
        f"{r.status} alert={text(page, '[role=alert]')!r} cookies={anon.cookies(admin_url)}",
    )
    look(page, "sign-in-wrong-token")
    r = page.goto(console + "/conditional-access")
    check(
        "1 not signed in: other pages redirect to sign-in too",
        page.url.startswith(console + "/sign-in?next=%2Fconsole%2Fconditional-access"),
        page.url,
    )
    anon.close()

# 2. Sign in as admin.
with Step("2 sign in"):
    page, r = sign_in(admin, admin_token, "admin overview")
    admin_page = page
    check(
        "2 sign in: the admin token leads to the Overview",
        r.status == 200 and page.url == console + "/" and text(page, "h1") == "Overview"
        and "admin-token · admin" in (text(page, ".me") or ""),
        f"{r.status} {page.url} h1={text(page, 'h1')!r} me={text(page, '.me')!r}",
    )
    sign_in_hop = chain(r)[0][1]
    c = next((c for c in admin.cookies(admin_url) if c["name"] == COOKIE), None)
    eight_hours = time.time() + 8 * 3600
    check(
        f"2 sign in: the session cookie as Chromium stored it: {COOKIE}, HttpOnly, SameSite=Strict, Secure, path /, host-only",
        c is not None
        and c["httpOnly"] and c["secure"] and c["sameSite"] == "Strict" and c["path"] == "/"
        and c["domain"] == "127.0.0.1"
        and (c["expires"] == -1 or c["expires"] <= eight_hours + 120),
        f"stored {admin.cookies(admin_url)}; set-cookie {sign_in_hop.header_values('set-cookie') if sign_in_hop else None}",
    )
    csp = r.headers.get("content-security-policy", "")
    check(
        "2 sign in: CSP without 'unsafe-inline' (script and style from this origin only, no framing)",
        csp and "unsafe-inline" not in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        and r.headers.get("x-frame-options") == "DENY" and r.headers.get("cache-control") == "no-store",
        f"csp={csp!r} xfo={r.headers.get('x-frame-options')} cache={r.headers.get('cache-control')}",
    )
    no_console_errors("admin overview")
    p404 = new_page(admin, "admin 404")
    r = p404.goto(console + "/no-such-page")
    check(
        "2 sign in: an unknown console page is a 404 page in the layout",
        r.status == 404 and text(p404, "h1") == "Not found" and p404.locator("nav.main").count() == 1,
        f"{r.status} h1={text(p404, 'h1')!r}",
    )
    p404.close()

# 3. Overview after a sync.
with Step("3 overview"):
    page = admin_page
    want = {"src-entra": "Up to date", "src-intune": "Up to date", "src-jamf": "Up to date"}

    def synced():
        page.reload()
        return {k: badge(page, k) for k in want} == want

    poll_until(synced, 25, every=0.5)
    got = {k: badge(page, k) for k in want}
    check("3 overview: Entra, Intune and Jamf panels say Up to date", got == want, got)
    stats = page.locator('section[aria-labelledby="src-jamf"] .stat').all_inner_texts()
    check(
        "3 overview: the Jamf panel says how long ago it synced and what it brought",
        stats and re.fullmatch(r"\d+ (s|min) ago", stats[0].strip())
        and facts(page.locator(JAMF_DL)).get("computers") == "5",
        f"{stats} {facts(page.locator(JAMF_DL))}",
    )
    check(
        "3 overview: who syncs (the lease holder)",
        "holds the sync lease" in (text(page, 'section[aria-labelledby="leader"]') or ""),
        text(page, 'section[aria-labelledby="leader"]'),
    )
    look(page, "overview")

# 4. Conditional Access settings.
with Step("4 conditional access"):
    page = new_page(admin, "admin settings")
    r = page.goto(console + "/conditional-access")
    conn = facts(page.locator('section[aria-labelledby="conn"] dl'))
    check(
        "4 conditional access: Enabled, the tenant id and the application id",
        r.status == 200
        and conn.get("Enable Intune Integration for macOS") == "Enabled"
        and conn.get("Tenant ID") == TENANT
        and conn.get("Application ID") == CLIENT_ID,
        conn,
    )
    check(
        "4 conditional access: the client secret comes from the configuration file (before any save)",
        conn.get("Client secret") == "From the configuration file (client_secret)",
        conn.get("Client secret"),
    )
    link = page.get_by_role("link", name="Open administrator consent URL")
    href = link.get_attribute("href") if link.count() else None
    u = urllib.parse.urlsplit(href or "")
    q = urllib.parse.parse_qs(u.query)
    _, _, consent = api("/api/v1/conditional-access/consent-url")
    cu = urllib.parse.urlsplit(consent["url"])
    cq = urllib.parse.parse_qs(cu.query)
    check(
        "4 conditional access: 'Open administrator consent URL' opens the API's adminconsent URL in a new tab",
        link.count() == 1
        and link.get_attribute("target") == "_blank"
        and "noopener" in (link.get_attribute("rel") or "")
        and u.netloc in ("login.microsoftonline.com", urllib.parse.urlsplit(emulator).netloc)
        and (u.scheme, u.netloc, u.path) == (cu.scheme, cu.netloc, cu.path)
        and u.path == f"/{TENANT}/v2.0/adminconsent"
        and q.get("client_id") == [CLIENT_ID]
        and q.get("scope") == cq.get("scope")
        and q.get("state"),
        f"link {href!r} target={link.get_attribute('target') if link.count() else None}; API {consent['url']!r}",
    )
    landing = facts(page.locator('section[aria-labelledby="landing"] dl'))
    check(
        "4 conditional access: unrecognized computers go to the registration page",
        landing.get("Send them to") == "The device registration page",
        landing,
    )
    shared = {}
    for tr in page.locator('section[aria-labelledby="shared"] tbody tr').all():
        cells = [t.strip() for t in tr.locator("td").all_inner_texts()]
        shared[cells[0]] = cells[1]
    _, _, current = api("/api/v1/conditional-access")
    from_api = (current.get("shared_attributes") or {}).get("attributes")
    check(
        "4 conditional access: the shared attributes table (the demo's [sync] share, as the API has them)",
        shared == SHARED and from_api in (None, SHARED),
        f"page {shared} API {from_api}",
    )
    check(
        "4 conditional access: an admin sees Edit, Run Test and Send Update",
        page.get_by_role("link", name="Edit", exact=True).count() == 1
        and page.get_by_role("button", name="Run Test").count() == 1
        and page.get_by_role("button", name="Send Update").count() == 1,
    )
    look(page, "conditional-access")
    # Keyboard: the first Tab shows the skip link; the focus ring stands out from the page.
    page.keyboard.press("Tab")
    skip = page.evaluate("(() => { const e = document.activeElement; const r = e.getBoundingClientRect(); "
                         "return [e.className, r.left, r.top, r.width]; })()")
    check(
        "4 keyboard: the first Tab shows the 'Skip to content' link on screen",
        skip[0] == "skip" and skip[1] >= 0 and skip[3] > 0,
        skip,
    )
    ring = None
    for _ in range(20):
        page.keyboard.press("Tab")
        ring = page.evaluate(
            """(() => { const e = document.activeElement; if (!e || !e.closest('main')) return null;
            const s = getComputedStyle(e); const c = window.__contrast;
            const bg = c.background(e.parentElement); const o = c.rgba(s.outlineColor);
            return {el: e.outerHTML.slice(0, 80), style: s.outlineStyle, width: s.outlineWidth,
                    color: o ? c.hex(o) : s.outlineColor, bg: c.hex(bg), ratio: o ? c.ratio(o, bg) : 0}; })()"""
        )
        if ring:
            break
    shot_count[0] += 1
    page.screenshot(path=os.path.join(SHOTS, f"{shot_count[0]:02d}-conditional-access-focus.png"))
    check(
        "4 keyboard: the focus ring on the page's first control is visible, with 3:1 contrast against the page (WCAG 1.4.11)",
        ring is not None and ring["style"] != "none" and ring["ratio"] >= 3,
        ring and f"{ring['el']}: outline {ring['style']} {ring['width']} {ring['color']} on {ring['bg']} = {ring['ratio']:.2f}:1",
    )
    settings_page = page

# 5. Edit, Save: a refused save, a wrong secret, the right one.
with Step("5 edit and save"):
    page = settings_page
    with page.expect_navigation():
        page.get_by_role("link", name="Edit", exact=True).click()
    check(
        "5 edit: the form holds the current values, the secret field empty",
        text(page, "h1") == "Edit Conditional Access"
        and page.input_value("#tenant_id") == TENANT
        and page.input_value("#application_id") == CLIENT_ID
        and page.input_value("#client_secret") == ""
        and page.locator('input[name="landing"][value="registration"]').is_checked()
        and page.locator('input[name="enabled"]').is_checked(),
        f"h1={text(page, 'h1')!r}",
    )
    look(page, "edit")
    page.fill("#tenant_id", "not-a-guid")
    page.fill("#client_secret", TYPED)
    r = submit(page, "Save")
    check(
        "5 edit: a tenant id that is not a GUID is not saved (400): the error names the field, the typed secret is not echoed",
        r.status == 400
        and "Not saved." in (text(page, '[role="alert"]') or "")
        and "tenant_id: must be the tenant's GUID" in (text(page, '[role="alert"]') or "")
        and TYPED not in page.content()
        and page.input_value("#client_secret") == "",
        f"{r.status} alert={text(page, '[role=alert]')!r}",
    )
    look(page, "edit-refused")
    page.goto(console + "/conditional-access/edit")
    page.fill("#client_secret", WRONG)
    r = submit(page, "Save")
    report = steps(page)
    token_step = next((s for s in report if s[1] == "Token"), None)
    check(
        "5 wrong secret: Save runs Run Test, which fails at the token step with the plain-language cause",
        r.status == 200
        and "Failed" in (text(page, "#test-result") or "")
        and token_step == ("Failed", "Token", WRONG_SECRET_TEXT)
        and all(s[0] == "Skipped" for s in report if s[1] in ("Graph devices", "Intune managed devices", "Compliance partner")),
        f"{r.status} {text(page, '#test-result')!r} {report}",
    )
    check(
        "5 wrong secret: the notice says what happened (the settings were saved, the test failed)",
        page.locator(".notice.bad").count() >= 1 and "Saved" in (text(page, ".notice") or ""),
        text(page, ".notice"),
    )
    look(page, "save-wrong-secret")
    with page.expect_navigation():
        page.get_by_role("link", name="Edit", exact=True).click()
    page.fill("#client_secret", SECRET)
    r = submit(page, "Save")
    report = steps(page)
    conn = facts(page.locator('section[aria-labelledby="conn"] dl'))
    check(
        "5 right secret: Save, and Run Test passed",
        r.status == 200
        and "Passed" in (text(page, "#test-result") or "")
        and report and all(s[0] in ("OK", "Warning") for s in report),
        f"{r.status} {text(page, '#test-result')!r} {report}",
    )
    check(
        "5 right secret: the page says Saved, and 'Client secret: Set on <date>'",
        (text(page, ".notice.ok") or "").startswith("Saved.")
        and re.fullmatch(r"Set on \d{4}-\d\d-\d\d \d\d:\d\d UTC", conn.get("Client secret", "")),
        f"notice={text(page, '.notice')!r} secret={conn.get('Client secret')!r}",
    )
    look(page, "save-right-secret")
    _, _, now = api("/api/v1/conditional-access")
    check(
        "5 save: saving a new secret only leaves the shared attributes to the configuration file ('From the configuration file … until they are set here')",
        (now.get("shared_attributes") or {}).get("from") == "file",
        f"after two saves that touched only the secret, the API says shared_attributes.from = "
        f"{(now.get('shared_attributes') or {}).get('from')!r}; the page: {text(page, SHARED_NOTE)!r}",
    )
    check(
        "5 the secrets typed appear in no page's HTML so far",
        not [n for n, h in html_seen.items() if SECRET in h or WRONG in h or TYPED in h],
        [n for n, h in html_seen.items() if SECRET in h or WRONG in h or TYPED in h],
    )

# 6. Run Test.
with Step("6 run test"):
    page = settings_page
    r = submit(page, "Run Test")
    report = steps(page)
    check(
        "6 run test: every step OK or Warning, the report Passed",
        r.status == 200 and "Passed" in (text(page, "#test-result") or "")
        and [s[1] for s in report] == ["Token", "Graph devices", "Intune managed devices", "Compliance partner", "Jamf"]
        and all(s[0] in ("OK", "Warning") for s in report),
        f"{r.status} {report}",
    )
    look(page, "run-test")

# 7. Send Update and its job.
with Step("7 send update"):
    page = settings_page
    _, _, hist = api("/api/v1/computers/102/history")
    history_before = len(hist["items"])
    sends_before = audit_actions().count("send_update")
    dialogs = []
    url_before = page.url
    page.once("dialog", lambda dlg: (dialogs.append(dlg.message), dlg.dismiss()))
    page.get_by_role("button", name="Send Update").click()
    page.wait_for_timeout(300)
    check(
        "7 send update: dismissing the confirmation starts nothing",
        dialogs == ["Send the inventory of every computer to Microsoft now?"]
        and page.url == url_before
        and text(page, "h1") == "Conditional Access"
        and audit_actions().count("send_update") == sends_before,
        f"dialogs={dialogs} url={page.url}",
    )
    # Graph answers slowly for a moment, so that the job is seen running and its page polls.
    emulator_post("/_emulator/faults", {"endpoint": "graph", "latency_ms": 2500})
    polls = []
    page.on("request", lambda q: "format=json" in q.url and polls.append(q.url))
    page.once("dialog", lambda dlg: (dialogs.append(dlg.message), dlg.accept()))
    try:
        with page.expect_navigation(url=re.compile(r".*/console/jobs/[^/?]+$")) as nav:
            page.get_by_role("button", name="Send Update").click()
        r = nav.value
        job_url = page.url
        check(
            "7 send update: accepting the confirmation shows the job page, Running",
            r.status == 200 and len(dialogs) == 2 and text(page, "#job-state") == "Running"
            and page.locator('[role="status"]').count() == 1,
            f"{r.status} {page.url} state={text(page, '#job-state')!r} dialogs={dialogs}",
        )
        look(page, "job-running")
    finally:
        emulator_post("/_emulator/faults", method="DELETE")
    page.locator("#job-state .badge", has_text="Done").wait_for(timeout=15_000)
    counts = {}
    for p in page.locator("#job-state ~ .grid .panel").all():
        counts[p.locator("p.small").inner_text().strip()] = p.locator("p.stat").inner_text().strip()
    check(
        "7 send update: the page followed the job (polling ?format=json) until Done",
        page.url == job_url and polls and all(u.startswith(job_url + "?format=json") for u in polls),
        f"{page.url} polls={polls}",
    )
    check(
        "7 send update: Done, with Sent/Unchanged/Unsupported/Failed as numbers (none failed)",
        list(counts) == ["Sent", "Unchanged", "Unsupported", "Failed"]
        and all(re.fullmatch(r"\d+", v) for v in counts.values())
        and int(counts["Sent"]) >= 1 and counts["Failed"] == "0",
        counts,
    )
    look(page, "job-done")
    no_console_errors("admin settings")

# 8. Computers.
with Step("8 computers"):
    page = new_page(admin, "admin computers")
    page.goto(console + "/computers")
    _, _, listed = api("/api/v1/computers")
    macs = [c["name"] for c in listed["items"]]
    check(
        "8 computers: the list shows the personas' Macs",
        rows(page) == macs and "Carol's MacBook Pro" in macs and "Bob's MacBook Pro" in macs,
        f"page {rows(page)} API {macs}",
    )
    look(page, "computers")
    page.fill("#filter", "carol")
    submit(page, "Search")
    check(
        "8 computers: searching 'carol' narrows the list to her Mac",
        rows(page) == ["Carol's MacBook Pro"] and "filter=carol" in page.url,
        f"{rows(page)} {page.url}",
    )
    look(page, "computers-search")
    page.fill("#filter", "")
    page.select_option("#state", "UNKNOWN")
    submit(page, "Search")
    unknown = [c["name"] for c in listed["items"] if any(a["registration_state"] == "UNKNOWN" for a in c["local_user_accounts"])]
    check(
        "8 computers: the state filter (Unknown) shows the unregistered Mac only",
        rows(page) == unknown == ["Carol's MacBook Pro"] and page.input_value("#state") == "UNKNOWN",
        f"{rows(page)} expected {unknown}",
    )
    page.select_option("#state", "ACTIVATED")
    submit(page, "Search")
    activated = [c["name"] for c in listed["items"] if any(a["registration_state"] == "ACTIVATED" for a in c["local_user_accounts"])]
    check("8 computers: the state filter (Activated)", rows(page) == activated and len(activated) == 4, rows(page))
    look(page, "computers-activated")
    with page.expect_navigation():
        page.get_by_role("link", name="Bob's MacBook Pro").click()
    accounts = page.locator('section[aria-labelledby="accounts"]')
    f = facts(accounts.locator("dl"))
    check(
        "8 computer: bob's Local User Account with its Conditional Access Inventory State",
        text(page, "h1") == "Bob's MacBook Pro"
        and "bob" in (text(page, 'section[aria-labelledby="accounts"] h3') or "")
        and "Conditional Access Inventory State" in accounts.inner_text()
        and f.get("Registration state") == "Activated"
        and f.get("Entra device ID") == BOB
        and f.get("Compliance, as last seen") == "Not compliant"
        and re.fullmatch(r"\d+ (s|min) old, from Entra ID", f.get("Posture age and source", "")),
        f"h1={text(page, 'h1')!r} {f}",
    )
    look(page, "computer")
    history_tab = page.get_by_role("link", name="History", exact=True)
    if history_tab.count() and history_tab.get_attribute("href") != "#history":
        with page.expect_navigation():
            history_tab.click()
    hist_rows = page.locator('section[aria-labelledby="hist"] tbody tr')
    first_row = [" ".join(t.split()) for t in hist_rows.first.locator("td").all_inner_texts()] if hist_rows.count() else []
    check(
        "8 computer: the History lists what was sent, Send Update's send included",
        hist_rows.count() > history_before >= 1
        and first_row[1:3] == ["bob", BOB]
        and "extensionAttribute10 = jamf:managed" in first_row[3]
        and "extensionAttribute12 = NOT_ENCRYPTED" in first_row[3]
        and first_row[4] == "OK",
        f"{hist_rows.count()} rows (before Send Update: {history_before}); newest {first_row}",
    )
    look(page, "computer-history")

# 9. What If.
with Step("9 what if"):
    page = new_page(admin, "admin what if")
    page.goto(console + "/what-if")
    page.fill("#url", app_url)
    page.fill("#user", BOB_UPN)
    page.fill("#device", BOB)
    page.select_option("#device_source", "token")
    r = submit(page, "Explain")
    f = facts(page.locator('section[aria-labelledby="decision"] dl'))
    check(
        "9 what if: bob on his Mac is Refused, device_noncompliant",
        r.status == 200
        and "Refused" in (text(page, "#decision") or "")
        and text(page, "#decision code") == "device_noncompliant"
        and f.get("Route") == "demo-app"
        and f.get("Posture", "").startswith("Not compliant, from Entra ID")
        and "FileVault" in f.get("Why", "")
        and f.get("The client gets") == "HTTP 403",
        f"{r.status} {text(page, '#decision')!r} {f}",
    )
    check(
        "9 what if: the form keeps the question asked",
        page.input_value("#url") == app_url and page.input_value("#user") == BOB_UPN and page.input_value("#device") == BOB,
    )
    look(page, "what-if")

# 10. Audit.
with Step("10 audit"):
    page = new_page(admin, "admin audit")
    page.goto(console + "/audit")
    entries = []
    for tr in page.locator("tbody tr").all():
        entries.append([" ".join(t.split()) for t in tr.locator("td").all_inner_texts()])
    actions = [e[2] for e in entries]
    updates = [e for e in entries if e[2] == "conditional_access.update"]
    check(
        "10 audit: the settings changes, Run Test and Send Update, by admin-token",
        len(updates) >= 2 and "run_test" in actions and "send_update" in actions
        and all(e[1] == "admin-token" for e in entries),
        actions,
    )
    check(
        "10 audit: the client secret only as ***changed***",
        all('"client_secret":"***changed***"' in e[3] for e in updates[:2])
        and not any(s in page.content() for s in (SECRET, WRONG, TYPED)),
        [e[3][:160] for e in updates],
    )
    look(page, "audit")
    # Each row's time, actor and action are short: they read on one line, words unbroken.
    wrapped = page.evaluate(
        """[...document.querySelectorAll('tbody tr')].map(tr => {
            const lines = el => { const r = document.createRange(); r.selectNodeContents(el); return r.getClientRects().length; };
            const [when, who, what] = [tr.children[0], tr.children[1], tr.children[2].querySelector('code') || tr.children[2]];
            return {when: lines(when), who: lines(who), what: lines(what), action: what.textContent};
        }).filter(r => r.when > 1 || r.who > 1 || r.what > 1)"""
    )
    check(
        "10 audit: at 1280 px each entry's When, Who and What read on one line (no 'send_ update', 'conditiona l_acc ess.u pdate')",
        not wrapped,
        "; ".join(f"{w['action']}: When on {w['when']} lines, Who on {w['who']}, What on {w['what']}" for w in wrapped[:4]),
    )
    no_console_errors("admin computers", "admin what if", "admin audit")

# 11. A reader.
with Step("11 reader"):
    reader = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="dark")
    page, r = sign_in(reader, reader_token, "reader")
    check(
        "11 reader: the read-only token signs in (Overview, no Run Test)",
        r.status == 200 and text(page, "h1") == "Overview" and "read-only" in (text(page, ".me") or "")
        and page.get_by_role("button", name="Run Test").count() == 0,
        f"{r.status} {text(page, 'h1')!r} {text(page, '.me')!r}",
    )
    look(page, "reader-overview-dark")
    page.goto(console + "/conditional-access")
    conn = facts(page.locator('section[aria-labelledby="conn"] dl'))
    check(
        "11 reader: sees the settings but no Edit, Run Test or Send Update",
        conn.get("Tenant ID") == TENANT
        and page.get_by_role("link", name="Edit", exact=True).count() == 0
        and page.get_by_role("button", name="Run Test").count() == 0
        and page.get_by_role("button", name="Send Update").count() == 0,
        conn,
    )
    look(page, "reader-settings-dark")
    reader_csrf = csrf_of(page)
    edit_page = new_page(reader, "reader edit")
    r = edit_page.goto(console + "/conditional-access/edit")
    check(
        "11 reader: GET /console/conditional-access/edit is refused (403)",
        r.status == 403 and text(edit_page, "h1") == "Read-only" and edit_page.locator("#tenant_id").count() == 0,
        f"{r.status} h1={text(edit_page, 'h1')!r}",
    )
    look(edit_page, "reader-edit-refused")
    _, before_headers, _ = api("/api/v1/conditional-access")
    r = reader.request.post(console + "/conditional-access", form=settings_form(reader_csrf, "access_denied"), max_redirects=0)
    _, after_headers, after = api("/api/v1/conditional-access")
    check(
        "11 reader: a POST of the settings form (with the reader's CSRF token) is refused (403), nothing written",
        r.status == 403 and after["landing"] == {"kind": "registration"} and after_headers["etag"] == before_headers["etag"],
        f"{r.status} landing={after['landing']} etag {before_headers['etag']} -> {after_headers['etag']}",
    )
    t = reader.request.post(console + "/conditional-access/test", form={"csrf": reader_csrf}, max_redirects=0)
    s = reader.request.post(console + "/conditional-access/send-update", form={"csrf": reader_csrf}, max_redirects=0)
    check(
        "11 reader: Run Test and Send Update POSTs are refused (403) and nothing is audited for the reader",
        t.status == 403 and s.status == 403 and not audit_actions("read-only-token"),
        f"test {t.status}, send-update {s.status}, audit {audit_actions('read-only-token')}",
    )
    page.goto(console + "/computers/102")
    check(
        "11 reader: a computer's page has no Send Update button",
        text(page, "h1") == "Bob's MacBook Pro" and page.get_by_role("button", name=re.compile("Send Update")).count() == 0,
    )
    no_console_errors("reader", "reader edit")
    reader.close()

# 12. CSRF.
with Step("12 csrf"):
    runs_before = audit_actions().count("run_test")
    r = admin.request.post(console + "/conditional-access/test", form={}, max_redirects=0)
    w = admin.request.post(console + "/conditional-access/test", form={"csrf": "x" * 32}, max_redirects=0)
    check(
        "12 csrf: a Run Test POST without the csrf field, or with a wrong one, is refused (403)",
        r.status == 403 and w.status == 403 and "did not come from the console" in r.text(),
        f"without {r.status}, wrong {w.status}",
    )
    for origin, kind in ((cross_site, "another site"), (same_site, "another origin of the same site")):
        p = new_page(admin, f"elsewhere {kind}", watch=False)
        p.goto(origin + "/run-test")
        with p.expect_navigation() as nav:
            p.get_by_role("button", name="Claim your prize").click()
        res = nav.value
        first_req, first_res = chain(res)[0]
        check(
            f"12 csrf: a form on {kind} ({origin}) posting to Run Test is refused (403, or no cookie: sign-in)",
            first_req.method == "POST"
            and (res.status == 403 or p.url.startswith(console + "/sign-in")),
            f"{first_req.method} {first_req.url}: {first_res.status if first_res else None}, ended {res.status} {p.url}",
        )
        if kind == "another site":
            look(p, "cross-site-refused")
        p.close()
    check(
        "12 csrf: no Run Test ran (the audit has no new run_test)",
        audit_actions().count("run_test") == runs_before,
        f"{runs_before} -> {audit_actions().count('run_test')}",
    )
    page = new_page(admin, "admin after csrf")
    page.goto(console + "/")
    check("12 csrf: the admin is still signed in", text(page, "h1") == "Overview", page.url)
    page.close()

# 13. Stale edit.
with Step("13 stale edit"):
    a = new_page(admin, "stale A")
    b = new_page(admin, "stale B")
    a.goto(console + "/conditional-access/edit")
    b.goto(console + "/conditional-access/edit")
    a.check('input[name="landing"][value="access_denied"]')
    r = submit(a, "Save")
    check(
        "13 stale edit: tab A saves the landing 'access denied'",
        r.status == 200 and (text(a, ".notice") or "").startswith("Saved.")
        and facts(a.locator('section[aria-labelledby="landing"] dl')).get("Send them to") == "The access denied page",
        f"{r.status} {text(a, '.notice')!r}",
    )
    r = submit(b, "Save")
    alert = text(b, '.notice.warn[role="alert"]') or ""
    changed = [" ".join(t.split()) for t in b.locator(".notice.warn tbody tr td:first-child").all_inner_texts()]
    theirs = [" ".join(t.split()) for t in b.locator(".notice.warn tbody tr td:nth-child(2)").all_inner_texts()]
    check(
        "13 stale edit: tab B's save is refused: someone else saved, the changed field (landing) shown",
        r.status == 409
        and "someone else saved these settings after you opened this page" in alert
        and changed == ["Unrecognized computers"]
        and re.search(r"access.denied", theirs[0] if theirs else ""),
        f"{r.status} {alert[:120]!r} changed={changed} theirs={theirs}",
    )
    look(b, "stale-edit")
    s = new_page(admin, "stale check")
    s.goto(console + "/conditional-access")
    check(
        "13 stale edit: nothing of B's was written (the settings page shows A's landing)",
        facts(s.locator('section[aria-labelledby="landing"] dl')).get("Send them to") == "The access denied page",
        facts(s.locator('section[aria-labelledby="landing"] dl')),
    )
    # Restore: B's form now holds B's values on top of A's version; saving it writes them.
    r = submit(b, "Save")
    s.reload()
    check(
        "13 stale edit: saving B's form again restores the landing to the registration page",
        r.status == 200
        and facts(s.locator('section[aria-labelledby="landing"] dl')).get("Send them to") == "The device registration page"
        and api("/api/v1/conditional-access")[2]["landing"] == {"kind": "registration"},
        f"{r.status} {facts(s.locator(LANDING_DL))}",
    )
    # A stale save after a change of the secret only: no setting shown differs.
    a.goto(console + "/conditional-access/edit")
    b.goto(console + "/conditional-access/edit")
    a.fill("#client_secret", SECRET)
    submit(a, "Save")
    r = submit(b, "Save")
    changed = [" ".join(t.split()) for t in b.locator(".notice.warn tbody tr").all_inner_texts()]
    check(
        "13 stale edit: after someone changed only the secret, B is told no setting differs (none listed)",
        r.status == 409 and not changed and "No setting shown here differs" in (text(b, ".notice.warn") or ""),
        f"{r.status} listed as changed: {changed}",
    )
    look(b, "stale-edit-secret-only")
    for p in (a, b, s):
        p.close()

# 14. Sign out.
with Step("14 sign out"):
    page = admin_page
    page.goto(console + "/")
    old = next((c for c in admin.cookies(admin_url) if c["name"] == COOKIE), None)
    r = submit(page, "Sign out")
    check(
        "14 sign out: back to the sign-in page, the cookie gone",
        page.url == console + "/sign-in?signed_out=1" and text(page, "h1") == "Sign in"
        and "You are signed out" in (text(page, ".notice") or "")
        and not [c for c in admin.cookies(admin_url) if c["name"] == COOKIE],
        f"{page.url} {admin.cookies(admin_url)}",
    )
    look(page, "signed-out")
    page.goto(console + "/")
    check("14 sign out: /console/ redirects to sign-in again", page.url.startswith(console + "/sign-in"), page.url)
    replay = pw.request.new_context(extra_http_headers={"cookie": f"{COOKIE}={old['value'] if old else 'none'}"})
    r = replay.get(console + "/", max_redirects=0)
    check(
        "14 sign out: the old session cookie, sent again, no longer signs in (the session ended on the server)",
        old is not None and r.status in (302, 303, 307) and r.headers.get("location", "").startswith("/console/sign-in"),
        f"{r.status} {r.headers.get('location')}",
    )
    replay.dispose()
    no_console_errors("admin overview")
    admin.close()

# 15. A phone's width.
with Step("15 phone"):
    phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = new_page(phone, "phone")
    page.goto(console + "/computers?filter=carol")
    page.fill("#token", admin_token)
    submit(page, SIGN_IN)
    check(
        "15 phone: signing in returns to the page asked for, its query included",
        page.url == console + "/computers?filter=carol",
        f"asked for {console}/computers?filter=carol, landed on {page.url}",
    )
    for path, name in (("/", "phone-overview"), ("/computers", "phone-computers")):
        page.goto(console + path)
        a = look(page, name)
        width, inner = a["scroll"]
        check(
            f"15 phone: {path} has no horizontal scroll at 390 px",
            width <= inner + 1,
            f"scrollWidth {width} > innerWidth {inner}",
        )
    # The other pages at this width (reported with every page's audit below).
    for path, name in (
        ("/conditional-access", "phone-conditional-access"),
        ("/computers/102", "phone-computer"),
        (f"/what-if?url={urllib.parse.quote(app_url)}&user={BOB_UPN}&device={BOB}&device_source=token", "phone-what-if"),
        ("/audit", "phone-audit"),
    ):
        page.goto(console + path)
        look(page, name)
    no_console_errors("phone")
    phone.close()

# Every page visited.
check(
    "every page: no console errors",
    not [e for errs in console_errors.values() for e in errs],
    [f"{label}: {e}" for label, errs in console_errors.items() for e in errs][:8],
)
leaked = [n for n, h in html_seen.items() if SECRET in h or WRONG in h or TYPED in h]
check("every page: no client secret in the HTML", not leaked, leaked)
check("every page: every form control has a label", not audit_issues["unlabelled"], audit_issues["unlabelled"][:8])
check("every page: links and buttons have names", not audit_issues["unnamed"], audit_issues["unnamed"][:8])
check("every page: one h1, a title, lang, unique ids", not audit_issues["structure"], audit_issues["structure"][:8])
check(
    "every page: text contrast meets WCAG AA (4.5:1, large text 3:1), light and dark",
    not audit_issues["contrast"],
    "; ".join(sorted(set(audit_issues["contrast"]))[:12]),
)
check("every page: no horizontal scroll of the body", not audit_issues["overflow"], audit_issues["overflow"][:8])

# 16. Sign in with Microsoft: the demo gives alice the admin app role and bob the reader's;
# carol has none and is refused. Entra's form_post comes back cross-site, and the session cookie
# (SameSite=Strict) must still be there on the first page.
with Step("16 sign in with Microsoft"):
    for persona, role in (("alice", "admin"), ("bob", "read-only"), ("carol", None)):
        ctx = browser.new_context(viewport={"width": 1280, "height": 800})
        page = new_page(ctx, f"entra {persona}")
        page.goto(console + "/computers")
        page.get_by_role("link", name="Sign in with Microsoft").click()
        page.locator(f'button[name="persona"][value="{persona}"]').click()
        page.wait_for_load_state("networkidle")
        me = text(page, ".me span") or ""
        if role:
            check(
                f"16 sign in with Microsoft as {persona}: back on the page asked for, as {role}",
                page.url == console + "/computers" and me == f"{persona}@contoso.test · {role}",
                f"{page.url} {me!r}",
            )
        else:
            check(
                f"16 sign in with Microsoft as {persona}: refused, no Portcullis role, no session",
                "no Portcullis admin or reader role" in (text(page, '[role="alert"]') or "")
                and not [c for c in ctx.cookies(admin_url) if c["name"] == COOKIE],
                f"{page.url} {text(page, '[role=alert]')!r}",
            )
        look(page, f"entra-{persona}")
        ctx.close()

# 17. The rest of the API in the console: Sync now from the Overview, a device's posture with
# every source's evidence, and Reload (the demo's configuration is built in memory: refused so).
with Step("17 sync now, a device, reload"):
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = new_page(ctx, "more")
    page.goto(console + "/")
    page.fill("#token", admin_token)
    submit(page, SIGN_IN)
    r = submit(page, "Sync now")
    check(
        "17 sync now: the Overview says the sync was woken",
        "The sync was woken" in (text(page, ".notice") or ""),
        f"{page.url} {text(page, '.notice')!r}",
    )
    page.goto(console + f"/devices/{BOB}")
    f = facts(page.locator('section[aria-labelledby="now"] dl'))
    check(
        "17 device: bob's Mac, not compliant, from Entra ID, with the reason",
        f.get("State") == "Not compliant" and f.get("From", "").startswith("Entra ID") and "FileVault" in f.get("Why", ""),
        f,
    )
    look(page, "device")
    page.goto(console + "/")
    r = submit(page, "Reload configuration")
    check(
        "17 reload: the demo's configuration was not read from a file, and the page says so",
        r.status == 409 and "not read from a file" in (text(page, '[role="alert"]') or ""),
        f"{r.status} {text(page, '[role=alert]')!r}",
    )
    ctx.close()

took = time.monotonic() - started
print(
    f"Chromium {browser.version}, Playwright {importlib.metadata.version('playwright')}, {shot_count[0]} screenshots in "
    f"{os.path.relpath(SHOTS, ROOT)}, {took:.1f} s: "
    f"{'all checks passed' if not failures else str(len(failures)) + ' failed: ' + '; '.join(failures)}"
)
sys.exit(1 if failures else 0)
