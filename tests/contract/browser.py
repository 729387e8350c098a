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
