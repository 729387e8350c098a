#!/usr/bin/env python3
"""Forward-auth in a real browser (issue 17): Debian's nginx with the documented snippets
(contrib/forward-auth/nginx/) in front of `portcullis demo`'s app, Portcullis answering its
auth_request checks on the demo's forward-auth listener, and Debian's Chromium driven by
Playwright signing in through nginx — the account picker, the callback through nginx, the
session cookie — as alice (the app, told who she is) and as dave (the enroll page, rendered by
Portcullis through nginx's error_page). Fails (exit 1, naming each failed check) otherwise.

Chromium trusts only the demo's gateway certificate, which nginx presents too (its public-key
hash on the command line, as browser_check.py does).

Usage: ingress_check.py PORTCULLIS_BINARY   (the debug build with the demo feature; nginx from
apt; run in the contract venv)
"""
import atexit
import base64
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import sync_playwright

import demo
from browser import CHROMIUM, CHROMIUM_ARGS, text
from report import Step, check, failures, free_port, poll_until, started
from demo import APP, CHECKS, CLIENT_ID, EMULATOR

WAIT_MS = 15_000
SESSION, CALLBACK = "__Host-portcullis", "/.portcullis/callback"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_demo = demo.start(sys.argv[1], 700)
offset, data = _demo.offset, _demo.data
emulator = f"http://127.0.0.1:{EMULATOR + offset}"
nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"

# nginx on a port of its own, with the demo's certificate (localhost) and the snippets.
port = free_port()
root = os.path.join(demo.work, "nginx")
os.makedirs(root, exist_ok=True)
snippets = os.path.join(ROOT, "contrib", "forward-auth", "nginx")
conf = f"""
user root;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 256; }}
http {{
  access_log {root}/access.log;
  client_body_temp_path {root}/body; proxy_temp_path {root}/proxy; fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
  upstream portcullis {{ server 127.0.0.1:{CHECKS + offset}; }}
  upstream app {{ server 127.0.0.1:{APP + offset}; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    server_name localhost;
    ssl_certificate {data}/gateway.pem;
    ssl_certificate_key {data}/gateway-key.pem;
    include {snippets}/portcullis-locations.conf;
    location / {{
      include {snippets}/portcullis-protect.conf;
      proxy_pass http://app;
    }}
  }}
}}
"""
with open(os.path.join(root, "nginx.conf"), "w") as f:
    f.write(conf)
nginx = subprocess.Popen(
    [nginx_bin, "-p", root, "-c", os.path.join(root, "nginx.conf"), "-g", "daemon off;"],
    stdout=subprocess.DEVNULL,
    stderr=open(os.path.join(root, "stderr.log"), "w"),
)
atexit.register(lambda: (nginx.kill(), nginx.wait()))


def listening():
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return nginx.poll() is not None


poll_until(listening, 20)
if nginx.poll() is not None:
    sys.exit(f"nginx exited: {open(os.path.join(root, 'stderr.log')).read()}")
site = f"https://localhost:{port}"

# Entra redirects back to the site nginx serves.
req = urllib.request.Request(
    f"{emulator}/_emulator/apps/{CLIENT_ID}/redirect_uris",
    data=json.dumps({"uri": f"{site}{CALLBACK}"}).encode(),
    headers={"content-type": "application/json"},
    method="POST",
)
demo.direct.open(req, timeout=5)

# The certificate nginx presents, verified against the demo's CA; its key is Chromium's only trust.
tls = ssl.create_default_context(cafile=_demo.ca_path)
with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
    with tls.wrap_socket(raw, server_hostname="localhost") as conn:
        leaf = x509.load_der_x509_certificate(conn.getpeercert(binary_form=True))
spki = leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()

pw = sync_playwright().start()
atexit.register(pw.stop)
browser = pw.chromium.launch(
    executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS + [f"--ignore-certificate-errors-spki-list={pin}"]
)
atexit.register(browser.close)


def sign_in(persona, path):
    """Through nginx: the sign-in redirect, the account picker, `persona`'s button, the callback
    (through nginx to Portcullis), back to `path`. Returns the page and nginx's final response."""
    ctx = browser.new_context()
    page = ctx.new_page()
    page.set_default_timeout(WAIT_MS)
    picker = page.goto(site + path)
    first = picker.request.redirected_from
    while first is not None and first.redirected_from is not None:
        first = first.redirected_from
    check(
        f"{persona}: nginx sends the browser to sign in (Portcullis's 302 to the emulator, through error_page)",
        first is not None
        and first.url == site + path
        and first.response().status == 302
        and first.response().headers.get("location", "").startswith(emulator),
        first and (first.url, first.response().status, first.response().headers.get("location")),
    )
    check(
        f"{persona}: the account picker",
        picker.status == 200 and text(page, "h1") == "Pick an account",
        f"{picker.status} {page.url}",
    )
    target = site + path
    with page.expect_response(lambda r: r.url == target and r.request.is_navigation_request()) as final:
        with page.expect_response(lambda r: r.url.startswith(site + CALLBACK)) as callback:
            page.locator(f'button[name="persona"][value="{persona}"]').click()
    cb = callback.value
    check(
        f"{persona}: the callback through nginx answers 303 back to {path}",
        cb.status == 303 and cb.headers.get("location") == path,
        f"{cb.status} {cb.headers.get('location')}",
    )
    stored = [c for c in ctx.cookies() if c["name"] == SESSION]
    check(
        f"{persona}: the session cookie is set for the site nginx serves (Secure, HttpOnly)",
        len(stored) == 1 and stored[0]["secure"] and stored[0]["httpOnly"] and stored[0]["domain"] == "localhost",
        stored,
    )
    page.wait_for_url(lambda u: u == target)
    return ctx, page, final.value


with Step("alice"):
    ctx, page, r = sign_in("alice", "/hello?via=nginx")
    try:
        echo = json.loads(r.text())
    except ValueError as err:
        echo = {"unparsed": repr(err)}
    h = echo.get("headers", {})
    check(
        "alice: the app behind nginx answers, told alice on her compliant Mac",
        r.status == 200
        and echo.get("app") == "demo-app"
        and h.get("x-portcullis-user") == ["alice@contoso.test"]
        and h.get("x-portcullis-decision") == ["compliant"],
        f"{r.status} {echo}",
    )
    check(
        "alice: the gateway's cookies never reach the app",
        "portcullis" not in " ".join(h.get("cookie", [])),
        h.get("cookie"),
    )
    again = page.goto(site + "/next")
    check("alice: the next page is let through on the session alone", again.status == 200, again.status)
    ctx.close()

with Step("dave"):
    ctx, page, r = sign_in("dave", "/hello")
    check(
        "dave: 403, 'Enroll this Mac' — Portcullis's page, through nginx",
        r.status == 403 and text(page, "h1") == "Enroll this Mac",
        f"{r.status} h1={text(page, 'h1')!r}",
    )
    ctx.close()

logs = open(os.path.join(data + ".log"), errors="replace").read() if os.path.exists(data + ".log") else ""
check(
    "the decision log shows the browser's requests with ingress=\"nginx\"",
    'ingress="nginx"' in logs and 'path="/hello"' in logs,
    logs[-500:],
)

took = __import__("time").monotonic() - started
version = subprocess.run([nginx_bin, "-v"], capture_output=True, text=True).stderr.strip()
if failures:
    print(f"ingress check failed ({len(failures)}): " + "; ".join(failures))
    sys.exit(1)
print(f"{version}, Chromium through nginx, {took:.1f} s: all checks passed")
