#!/usr/bin/env python3
"""Microsoft's and Jamf's own clients against the emulator over HTTPS (issue 14): MSAL for
Python makes every Entra call the gateway makes, and jamf-pro-sdk (macadmins) every Jamf Pro
inventory call, parsing each record into its typed models; both refuse what the real services
would not send. Starts `portcullis emulator serve` over TLS with a throwaway development CA, runs
the checks, stops it. Fails (exit 1, naming each failed check) when a client cannot use a response.

Usage: clients_check.py PORTCULLIS_BINARY   (run by scripts/contract.sh, in its pinned venv)
"""
import atexit
import datetime
import html.parser
import os
import socket
import subprocess
import sys
import tempfile
import time

# requests lets these override a session's `verify`: the checks trust only the throwaway CA.
for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
    os.environ.pop(var, None)

import msal
import requests
from jamf_pro_sdk import JamfProClient, SessionConfig
from jamf_pro_sdk.clients.auth import ApiClientCredentialsProvider
from jamf_pro_sdk.clients.pro_api.pagination import FilterField, SortField
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The emulator's fixed identities (crates/emulator/src/personas.rs).
tenant = "7d3c5b0e-2f41-4c9a-9b8e-5a1e3f6c2d10"
client_id = "5f0c8a9e-3b2d-4e6f-8a1c-9d7e6b5a4c3f"
secret = "portcullis-demo-secret"


def dev_ca(directory):
    """A CA and a certificate for localhost signed by it: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    name = lambda cn: x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("contract CA")).issuer_name(name("contract CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = [os.path.join(directory, n) for n in ("ca.pem", "cert.pem", "key.pem")]
    blobs = [
        ca.public_bytes(serialization.Encoding.PEM),
        leaf.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    ]
    for path, blob in zip(paths, blobs):
        with open(path, "wb") as f:
            f.write(blob)
    return paths


work = tempfile.mkdtemp()
ca, cert, key = dev_ca(work)
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
emulator = subprocess.Popen(
    [sys.argv[1], "emulator", "serve", "--listen", f"127.0.0.1:{port}", "--tls-cert", cert, "--tls-key", key],
    stdout=subprocess.DEVNULL,
)
# Stopped however this script ends (a check that raises included).
atexit.register(emulator.kill)
base = f"https://localhost:{port}"
http = requests.Session()
# The environment's CA bundle (REQUESTS_CA_BUNDLE) would override `verify`; and no proxies.
http.trust_env = False
http.verify = ca
authority = f"{base}/{tenant}"
failures = []
for _ in range(150):
    try:
        http.get(f"{authority}/v2.0/.well-known/openid-configuration", timeout=2)
        break
    except requests.ConnectionError:
        time.sleep(0.1)


def check(what, ok, detail=""):
    print(f"{'ok' if ok else 'FAIL'}  {what}{': ' + str(detail) if detail and not ok else ''}")
    if not ok:
        failures.append(what)


# The emulator is not a Microsoft cloud host: MSAL is told not to look it up in the instance
# discovery list, as one does for any authority it does not know. Nothing else is relaxed.
app = msal.ConfidentialClientApplication(
    client_id,
    authority=authority,
    client_credential=secret,
    http_client=http,
    instance_discovery=False,
)

# 1. Client credentials (the sync's Graph token).
t = app.acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])
check("client credentials: an access token", "access_token" in t, t)
check("client credentials: Bearer, with expires_in", t.get("token_type") == "Bearer" and t.get("expires_in"), t)

# 2. A wrong secret: Entra's error shape, which MSAL reports as error + AADSTS codes.
bad = msal.ConfidentialClientApplication(
    client_id, authority=authority, client_credential="wrong", http_client=http, instance_discovery=False
)
e = bad.acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])
check("wrong secret: invalid_client with an AADSTS code", e.get("error") == "invalid_client" and e.get("error_codes"), e)


class Form(html.parser.HTMLParser):
    """The hidden inputs and the action of the first form on a page."""

    def __init__(self):
        super().__init__()
        self.action, self.fields = None, {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = a.get("action")
        if tag == "input" and a.get("name"):
            self.fields[a["name"]] = a.get("value", "")


# 3. The browser sign-in: authorization code with PKCE, form_post, then redemption. MSAL checks
# the state, the nonce, the ID token's issuer, audience and signature, and client_info.
redirect = "https://localhost:1/.portcullis/callback"
http.post(f"{base}/_emulator/apps/{client_id}/redirect_uris", json={"uri": redirect}).raise_for_status()
flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=redirect, response_mode="form_post")
check("auth code flow: an authorize URL with PKCE S256", "code_challenge_method=S256" in flow["auth_uri"], flow)
page = Form()
page.feed(http.get(flow["auth_uri"]).text)
fields = dict(page.fields, persona="alice")
posted = http.post(flow["auth_uri"], data=fields)
back = Form()
back.feed(posted.text)
check("authorize: form_post back to the redirect URI", back.action == redirect, posted.text[:300])
result = app.acquire_token_by_auth_code_flow(flow, back.fields)
check("auth code flow: tokens", "access_token" in result and "id_token" in result, result)
claims = result.get("id_token_claims", {})
check("ID token: alice, in the tenant", claims.get("tid") == tenant and "alice" in claims.get("preferred_username", ""), claims)
accounts = app.get_accounts()
check("client_info: MSAL keys the account by uid.utid", any(a.get("home_account_id", "").endswith("." + tenant) for a in accounts), accounts)

# 4. The refresh token, through MSAL's cache (what session renewal does).
if accounts:
    again = app.acquire_token_silent_with_error(["User.Read"], account=accounts[0], force_refresh=True)
    check("refresh: a new access token", bool(again) and "access_token" in again, again)

# 5. An unknown tenant: Entra answers discovery with AADSTS90002, which MSAL turns into its
# "Unable to get authority configuration" error, as it does against the real service.
d = http.get(f"{base}/no-such-tenant.test/v2.0/.well-known/openid-configuration")
check("unknown tenant: discovery answers 400 AADSTS90002", d.status_code == 400 and 90002 in d.json().get("error_codes", []), d.text)
try:
    msal.ConfidentialClientApplication(
        client_id, authority=f"{base}/no-such-tenant.test", client_credential=secret, http_client=http, instance_discovery=False
    )
    check("unknown tenant: MSAL refuses the authority", False, "MSAL accepted it")
except ValueError as err:
    check("unknown tenant: MSAL refuses the authority", "Unable to get authority configuration" in str(err), err)

# 6. Jamf Pro, through jamf-pro-sdk: OAuth client credentials (/api/v1/oauth/token), the v3
# inventory with the sections the sync asks for (comma-joined, as the SDK sends them), sorted,
# every record parsed into the SDK's pydantic models; one record's detail; the v1 inventory
# with an RSQL filter.
jamf = JamfProClient(
    server="localhost",
    port=port,
    credentials=ApiClientCredentialsProvider("portcullis-jamf-client", "portcullis-jamf-secret"),
    session_config=SessionConfig(ca_cert_bundle=ca),
)
sections = ["GENERAL", "HARDWARE", "OPERATING_SYSTEM", "LOCAL_USER_ACCOUNTS", "DISK_ENCRYPTION"]
try:
    computers = jamf.pro_api.get_computer_inventory_v3(sections=sections, sort_expression=SortField("id").asc())
    check("jamf v3 inventory: every record parses", len(computers) >= 5, len(computers))
    check("jamf v3 inventory: sorted by id", [int(c.id) for c in computers] == sorted(int(c.id) for c in computers))
    alice = next((c for c in computers if c.general.name.startswith("Alice")), None)
    check("jamf: last contact and users parse", alice is not None and alice.general.lastContactTime is not None and alice.localUserAccounts, alice)
    state = alice.diskEncryption.bootPartitionEncryptionDetails.partitionFileVault2State.value if alice else None
    check("jamf: disk encryption under Jamf's names", state == "ENCRYPTED", alice and alice.diskEncryption)
    detail = jamf.pro_api.get_computer_inventory_detail_v3(alice.id)
    check("jamf v3 detail: the same computer", detail.general.name == alice.general.name, detail.general)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        v1 = jamf.pro_api.get_computer_inventory_v1(filter_expression=FilterField("general.name").eq("Bob*"))
    check("jamf v1 inventory: an RSQL filter", [c.general.name for c in v1] == ["Bob's MacBook Pro"], [c.general.name for c in v1])
except Exception as err:  # a response the SDK cannot use: name it, do not stop the report
    check("jamf-pro-sdk: the inventory calls", False, repr(err))

emulator.terminate()
emulator.wait(timeout=10)
import importlib.metadata

versions = f"MSAL {msal.__version__}, jamf-pro-sdk {importlib.metadata.version('jamf-pro-sdk')}"
print(f"{versions}: {'all checks passed' if not failures else str(len(failures)) + ' failed'}")
sys.exit(1 if failures else 0)
