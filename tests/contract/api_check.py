#!/usr/bin/env python3
"""The admin API against its own OpenAPI document (issue 14): schemathesis, seeded and bounded,
fuzzes every operation of `portcullis demo`'s admin API, once with the admin token and once
with no credential, and fails on a 5xx, a status or header the document does not give, a body
that does not match its schema, a schema-violating request accepted, or — without a credential
— any answer but 401. Then the demo must be unharmed: ready, and alice still let through.

The gateway is started with a proxy that leads nowhere for everything but loopback: a fuzzed
PUT may name another national cloud, and Run Test on save must not reach for the internet.

Not checked, on purpose: `positive_data_acceptance` (a schema cannot say every rule — "give url
or route", a tenant GUID that exists — so a schema-valid question may still be refused with
400) and `missing_required_header` (a PUT without If-Match is 428 Precondition Required, RFC
6585, not the 400 family that check wants).

Usage: api_check.py PORTCULLIS_BINARY   (in the venv of tests/contract/requirements.txt)
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import demo
from demo import ADMIN, EMULATOR, HTTP

SEED, EXAMPLES = 20261201, 60
CHECKS_EXCLUDED = "positive_data_acceptance,missing_required_header"
here = os.path.dirname(os.path.abspath(__file__))
schemathesis = os.path.join(os.path.dirname(sys.executable), "schemathesis")

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    nowhere = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed once bound and released
d = demo.start(
    sys.argv[1],
    700,
    env={"HTTPS_PROXY": nowhere, "HTTP_PROXY": nowhere, "NO_PROXY": "127.0.0.1,localhost"},
)
admin = f"http://127.0.0.1:{d.port(ADMIN)}"
token = d.printed("admin token: ")
failures = []


def fuzz(label, *extra, env=None):
    started = time.monotonic()
    report = os.path.join(demo.work, label.replace(" ", "-"))
    run = subprocess.run(
        [
            schemathesis, "run", f"{admin}/api/v1/openapi.json",
            "--seed", str(SEED), "--max-examples", str(EXAMPLES),
            # One worker: hypothesis's lambda-source cache is not thread-safe (a runtime error
            # with two, seen with schemathesis 4.32).
            "--workers", "1",
            "--exclude-checks", CHECKS_EXCLUDED,
            "--request-timeout", "30",
            "--report", "ndjson", "--report-dir", report,
            *extra,
        ],
        capture_output=True,
        text=True,
        # schemathesis keeps a cache where it runs: not in the checkout.
        cwd=demo.work,
        env={**os.environ, **(env or {}), "PYTHONPATH": here, "NO_COLOR": "1"},
    )
    took = time.monotonic() - started
    # The summary's counts, e.g. "951 generated, 951 passed, 24 skipped".
    counts = next((l.strip() for l in run.stdout.splitlines() if " generated, " in l), "no summary")
    ok = run.returncode == 0
    print(f"{'ok' if ok else 'FAIL'}  schemathesis, {label}: {counts} ({took:.1f} s)", flush=True)
    if not ok:
        print(run.stdout[-6000:], run.stderr[-2000:], sep="\n")
        failures.append(label)


fuzz("with the admin token", "--header", f"Authorization: Bearer {token}")
# The hook module's check holds every answer to a request without a credential to 401.
fuzz("without a credential", env={"SCHEMATHESIS_HOOKS": "api_check_hooks"})

# Unharmed: still ready, and alice (compliant) still let through with her token.
ready = demo.direct.open(f"{admin}/readyz", timeout=5).status == 200
minted = demo.direct.open(f"http://127.0.0.1:{d.port(EMULATOR)}/_emulator/token?persona=alice", timeout=5)
alice = json.load(minted)["access_token"]
req = urllib.request.Request(f"http://127.0.0.1:{d.port(HTTP)}/hello", headers={"Authorization": f"Bearer {alice}"})
status = demo.direct.open(req, timeout=5).status
ok = ready and status == 200
print(f"{'ok' if ok else 'FAIL'}  the demo afterwards: ready, alice gets {status}", flush=True)
if not ok:
    failures.append("the demo afterwards")

print(f"schemathesis against the admin API: {'all checks passed' if not failures else 'failed: ' + '; '.join(failures)}")
sys.exit(1 if failures else 0)
