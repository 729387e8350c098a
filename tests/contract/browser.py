"""What both browser checks share: Debian's Chromium as Playwright launches it here (headless, no
sandbox — the suite runs as root in CI — and nothing fetched from Google while the checks run),
and reading what a page shows."""
import os

CHROMIUM = os.environ.get("PORTCULLIS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def text(page, selector):
    """The first match's text, whitespace folded; `None` when nothing matches."""
    loc = page.locator(selector)
    return " ".join(loc.first.inner_text().split()) if loc.count() else None


def facts(scope):
    """A definition list under `scope` as {term: text}."""
    terms = scope.locator("dt").all_inner_texts()
    values = scope.locator("dd").all_inner_texts()
    return {t.strip(): " ".join(v.split()) for t, v in zip(terms, values)}


def serve_pages(pages, context=None):
    """Another site: serves `pages` ({path: HTML body}) on a port of its own (over TLS with
    `context`) until the check ends; returns the port."""
    import atexit
    import http.server
    import threading

    from report import free_port

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get(self.path)
            if body is None:
                self.send_error(404)
                return
            page = f"<!doctype html><meta charset=utf-8><title>elsewhere</title><body>{body}</body>".encode()
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *_):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    atexit.register(server.shutdown)
    return server.server_address[1]
