"""What every contract check prints, and how its rounds fail: one line a check (`ok`, or `FAIL`
with what was seen), a round that raises fails by name while the others still run, and
`failures` names every failed check for the summary and the exit status."""
import socket
import time
import traceback

started = time.monotonic()
failures = []


def check(what, ok, detail=""):
    print(f"{'ok' if ok else 'FAIL'}  {what}{': ' + str(detail) if detail and not ok else ''}", flush=True)
    if not ok:
        failures.append(what)
    return ok


class Step:
    """A round: an exception (a timeout, a missing element) fails that round, named, and the
    other rounds still run."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if kind is not None and not issubclass(kind, Exception):
            return False  # SystemExit (SIGTERM), KeyboardInterrupt: stop, cleaning up
        if err is not None:
            detail = "".join(traceback.format_exception_only(kind, err)).strip().splitlines()[0]
            check(f"{self.name}: the round runs to its end", False, detail)
        return True


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll_until(probe, within, every=0.2):
    """Asks `probe` until it returns something true or `within` seconds pass; returns its last
    answer. The one wait of the checks: never a fixed sleep for an event."""
    deadline = time.monotonic() + within
    while True:
        got = probe()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(every)
