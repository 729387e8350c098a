#!/usr/bin/env python3
"""Forward-auth in a real browser (issue 17): Debian's nginx with the documented snippets
(contrib/forward-auth/nginx/), and Debian's Caddy with the documented Caddyfile, each in front
of `portcullis demo`'s app with Portcullis answering their checks (nginx: the demo's
`checks-nginx` forward-auth listener; Caddy: its `checks-caddy`), and Debian's Chromium driven by
Playwright signing in through each — the account picker, the callback through the ingress, the
session cookie — as alice (the app, told who she is, without Portcullis's cookie) and as dave
(the enroll page, rendered by Portcullis). Fails (exit 1, naming each failed check) otherwise.

Chromium trusts only the demo's gateway certificate, which both ingresses present too (its
public-key hash on the command line, as browser_check.py does).

Usage: ingress_check.py PORTCULLIS_BINARY   (the debug build with the demo feature; nginx and
caddy from apt; run in the contract venv)
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
from demo import APP, CADDY_CHECKS, CHECKS, CLIENT_ID, EMULATOR

WAIT_MS = 15_000
SESSION, CALLBACK = "__Host-portcullis", "/.portcullis/callback"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_demo = demo.start(sys.argv[1], 700)
offset, data = _demo.offset, _demo.data
emulator = f"http://127.0.0.1:{EMULATOR + offset}"
nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
caddy_bin = shutil.which("caddy") or "/usr/bin/caddy"
cert, key = os.path.join(data, "gateway.pem"), os.path.join(data, "gateway-key.pem")


def start(name, argv, port, env=None):
    """Starts an ingress and waits until it listens on `port`; stopped when the check ends."""
    root = os.path.join(demo.work, name)
    os.makedirs(root, exist_ok=True)
    err = os.path.join(root, "stderr.log")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(err, "w"), env=env)
    atexit.register(lambda: (proc.kill(), proc.wait()))

    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return proc.poll() is not None

    poll_until(listening, 20)
    if proc.poll() is not None:
        sys.exit(f"{name} exited: {open(err).read()}")
    return f"https://localhost:{port}"


def nginx():
    """nginx with the demo's certificate (localhost) and the snippets."""
    port, root = free_port(), os.path.join(demo.work, "nginx")
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
  upstream portcullis {{ server 127.0.0.1:{CHECKS + offset}; keepalive 8; }}
  upstream app {{ server 127.0.0.1:{APP + offset}; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    server_name localhost;
    ssl_certificate {cert};
    ssl_certificate_key {key};
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
    argv = [nginx_bin, "-p", root, "-c", os.path.join(root, "nginx.conf"), "-g", "daemon off;"]
    return start("nginx", argv, port)


def caddy():
    """Caddy with the documented Caddyfile, its placeholders from the environment."""
    port, root = free_port(), os.path.join(demo.work, "caddy")
    os.makedirs(root, exist_ok=True)
    env = {
        **os.environ,
        "SITE": f"localhost:{port}",
        "PORTCULLIS_AUTH": f"127.0.0.1:{CADDY_CHECKS + offset}",
        "APP": f"127.0.0.1:{APP + offset}",
        "TLS_CERT": cert,
        "TLS_KEY": key,
        "HTTP_PORT": str(free_port()),
        "HTTPS_PORT": str(port),
        "HOME": root,
        "XDG_DATA_HOME": root,
        "XDG_CONFIG_HOME": root,
    }
    argv = [caddy_bin, "run", "--adapter", "caddyfile", "--config", os.path.join(ROOT, "contrib", "forward-auth", "Caddyfile")]
    return start("caddy", argv, port, env)


sites = {"nginx": nginx(), "caddy": caddy()}
for site in sites.values():
    # Entra redirects back to the site the ingress serves.
    req = urllib.request.Request(
        f"{emulator}/_emulator/apps/{CLIENT_ID}/redirect_uris",
        data=json.dumps({"uri": f"{site}{CALLBACK}"}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    demo.direct.open(req, timeout=5)

# The certificate the ingresses present, verified against the demo's CA; its key is Chromium's
# only trust.
tls = ssl.create_default_context(cafile=_demo.ca_path)
with socket.create_connection(("127.0.0.1", int(sites["nginx"].rsplit(":", 1)[1])), timeout=5) as raw:
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


def sign_in(ingress, persona, path):
    """Through `ingress`: the sign-in redirect, the account picker, `persona`'s button, the
    callback (through the ingress to Portcullis), back to `path`. Returns the page and the
    ingress's final response."""
    site = sites[ingress]
    ctx = browser.new_context()
    page = ctx.new_page()
    page.set_default_timeout(WAIT_MS)
    picker = page.goto(site + path)
    first = picker.request.redirected_from
    while first is not None and first.redirected_from is not None:
        first = first.redirected_from
    check(
        f"{ingress} {persona}: the browser is sent to sign in (Portcullis's 302 to the emulator)",
        first is not None
        and first.url == site + path
        and first.response().status == 302
        and first.response().headers.get("location", "").startswith(emulator),
        first and (first.url, first.response().status, first.response().headers.get("location")),
    )
    check(
        f"{ingress} {persona}: the account picker",
        picker.status == 200 and text(page, "h1") == "Pick an account",
        f"{picker.status} {page.url}",
    )
    target = site + path
    with page.expect_response(lambda r: r.url == target and r.request.is_navigation_request()) as final:
        with page.expect_response(lambda r: r.url.startswith(site + CALLBACK)) as callback:
            page.locator(f'button[name="persona"][value="{persona}"]').click()
    cb = callback.value
    check(
        f"{ingress} {persona}: the callback through {ingress} answers 303 back to {path}",
        cb.status == 303 and cb.headers.get("location") == path,
        f"{cb.status} {cb.headers.get('location')}",
    )
    stored = [c for c in ctx.cookies() if c["name"] == SESSION]
    check(
        f"{ingress} {persona}: the session cookie is set for the site {ingress} serves (Secure, HttpOnly)",
        len(stored) == 1 and stored[0]["secure"] and stored[0]["httpOnly"] and stored[0]["domain"] == "localhost",
        stored,
    )
    page.wait_for_url(lambda u: u == target)
    return ctx, page, final.value


for ingress, site in sites.items():
    with Step(f"{ingress} alice"):
        ctx, page, r = sign_in(ingress, "alice", f"/hello?via={ingress}")
        try:
            echo = json.loads(r.text())
        except ValueError as err:
            echo = {"unparsed": repr(err)}
        h = echo.get("headers", {})
        check(
            f"{ingress} alice: the app behind {ingress} answers, told alice on her compliant Mac",
            r.status == 200
            and echo.get("app") == "demo-app"
            and h.get("x-portcullis-user") == ["alice@contoso.test"]
            and h.get("x-portcullis-decision") == ["compliant"],
            f"{r.status} {echo}",
        )
        check(
            f"{ingress} alice: the gateway's cookies never reach the app",
            "portcullis" not in " ".join(h.get("cookie", [])),
            h.get("cookie"),
        )
        again = page.goto(site + "/next")
        check(f"{ingress} alice: the next page is let through on the session alone", again.status == 200, again.status)
        ctx.close()

    with Step(f"{ingress} dave"):
        ctx, page, r = sign_in(ingress, "dave", "/hello")
        check(
            f"{ingress} dave: 403, 'Enroll this Mac' — Portcullis's page, through {ingress}",
            r.status == 403 and text(page, "h1") == "Enroll this Mac",
            f"{r.status} h1={text(page, 'h1')!r}",
        )
        ctx.close()

logs = open(os.path.join(data + ".log"), errors="replace").read() if os.path.exists(data + ".log") else ""
for ingress in sites:
    check(
        f"the decision log shows the browser's requests through {ingress} (ingress=\"{ingress}\")",
        any(f'ingress="{ingress}"' in l and 'path="/hello"' in l for l in logs.splitlines()),
        logs[-500:],
    )

took = __import__("time").monotonic() - started
version = subprocess.run([nginx_bin, "-v"], capture_output=True, text=True).stderr.strip()
version += ", Caddy " + subprocess.run([caddy_bin, "version"], capture_output=True, text=True).stdout.split()[0]
if failures:
    print(f"ingress check failed ({len(failures)}): " + "; ".join(failures))
    sys.exit(1)
print(f"{version}, Chromium through each, {took:.1f} s: all checks passed")
