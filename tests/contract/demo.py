"""`portcullis demo` for the contract checks that need the whole product (browser_check.py,
api_check.py): on free ports, in a throwaway directory, ready when its listeners answer, stopped
with Ctrl-C (then killed) however the check ends, SIGTERM included."""
import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request

from report import poll_until

# The demo's ports before the offset (src/demo/mod.rs, config/demo.toml).
HTTPS, HTTP, ADMIN, EMULATOR, APP, CHECKS, CADDY_CHECKS = 8443, 8080, 9090, 8900, 8901, 8091, 8092
# The emulator's fixed tenant and gateway app (crates/emulator/src/personas.rs).
TENANT = "7d3c5b0e-2f41-4c9a-9b8e-5a1e3f6c2d10"
CLIENT_ID = "5f0c8a9e-3b2d-4e6f-8a1c-9d7e6b5a4c3f"

# Requests to the demo go straight to it, never through a proxy from the environment.
for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    os.environ.pop(var, None)
direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
work = tempfile.mkdtemp(prefix="portcullis-contract-")
atexit.register(shutil.rmtree, work, True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
_running = []


class Demo:
    def __init__(self, offset, lines, data):
        self.offset, self.lines, self.data = offset, lines, data

    def port(self, base):
        return base + self.offset

    def printed(self, label):
        """What the summary prints after `label`, e.g. `admin token: `."""
        line = next(l for l in self.lines if label in l)
        return line.split(label, 1)[1].strip()

    @property
    def ca_path(self):
        return self.printed("development CA: ").split(")")[0]


def _ports_free(offset):
    for base in (HTTPS, HTTP, ADMIN, EMULATOR, APP, CHECKS, CADDY_CHECKS):
        with socket.socket() as s:
            # As the demo binds (Rust's std sets it): a port in TIME_WAIT from an earlier run is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", base + offset))
            except OSError:
                return False
    return True


def _ready(lines, offset):
    """The summary names the CA and the admin token, the admin API answers /readyz, the
    gateway's HTTPS listener and the emulator accept connections."""
    if not any("development CA: " in l for l in lines) or not any("admin token: " in l for l in lines):
        return False
    try:
        if direct.open(f"http://127.0.0.1:{ADMIN + offset}/readyz", timeout=2).status != 200:
            return False
        for port in (HTTPS + offset, EMULATOR + offset):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def start(binary, first_offset, env=None):
    """The demo on free ports (`first_offset` first, clear of the Rust tests' offsets of 20000
    and up; else a random one). Another test may take a port between the look and the bind:
    then again, on other ports."""
    for attempt in range(3):
        candidates = ([first_offset] if attempt == 0 else []) + random.sample(range(400, 19_000), 200)
        offset = next((o for o in candidates if _ports_free(o)), None)
        if offset is None:
            sys.exit("no free port offset for the demo")
        data = os.path.join(work, f"demo-{len(_running)}")
        log = open(data + ".log", "w+b")
        proc = subprocess.Popen(
            [binary, "demo", "--port-offset", str(offset), "--data", data],
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, **(env or {})},
        )
        _running.append(proc)
        lines = []
        # Drained so that the demo never blocks on a full pipe.
        threading.Thread(target=lambda: [lines.append(l.decode(errors="replace")) for l in proc.stdout], daemon=True).start()
        poll_until(lambda: proc.poll() is not None or _ready(lines, offset), 45)
        if proc.poll() is None and _ready(lines, offset):
            return Demo(offset, lines, data)
        log.seek(0)
        tail = log.read().decode(errors="replace")[-2000:]
        if not (proc.poll() is not None and "in use" in tail and attempt < 2):
            sys.exit(f"the demo did not get ready (exit {proc.poll()}):\n{''.join(lines)}\n{tail}")
    sys.exit("the demo found no free ports")


def _stop_all():
    for proc in _running:
        if proc.poll() is None:
            # Ctrl-C, as a person stops it: the demo shuts down cleanly.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


atexit.register(_stop_all)
