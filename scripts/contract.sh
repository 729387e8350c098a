#!/usr/bin/env bash
# The contract suite (issue 14), run by scripts/test.sh after the Rust tests (which build
# target/debug/portcullis with the demo feature), each with clients nobody here wrote, pinned in
# tests/contract/requirements.txt:
#   clients_check.py  Microsoft's MSAL and msgraph-sdk and Jamf's jamf-pro-sdk against the emulator
#                     over HTTPS: fails when one cannot use a response;
#   api_check.py      schemathesis against the admin API's OpenAPI document, with and without a
#                     credential, seeded and bounded;
#   browser_check.py  Playwright driving Debian's Chromium through the end-user pages of the demo;
#   console_check.py  the same through the admin console (screenshots in target/console-screenshots);
#   ingress_check.py  Chromium signing in through Debian's nginx and Caddy, Portcullis answering
#                     their forward-auth checks (docs/forward-auth.md).
# The venv lives in target/contract-venv and is remade when the pins change; Chromium and
# Python's venv (and nginx and Caddy) are installed with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/contract-venv
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
{ python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null; } || missing+=(python3 python3-venv)
command -v "${PORTCULLIS_CHROMIUM:-chromium}" >/dev/null 2>&1 || missing+=(chromium)
PATH="$PATH:/usr/sbin" command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v caddy >/dev/null 2>&1 || missing+=(caddy)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! cmp -s tests/contract/requirements.txt "$venv/requirements.txt" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/contract/requirements.txt
  cp tests/contract/requirements.txt "$venv/requirements.txt"
fi
[ -x target/debug/portcullis ] || cargo build --locked --features demo --bin portcullis
failed=()
for check in clients_check api_check browser_check console_check ingress_check; do
  echo "== contract: $check"
  "$venv/bin/python" "tests/contract/$check.py" target/debug/portcullis || failed+=("$check")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "contract suite failed: ${failed[*]}" >&2
  exit 1
fi
