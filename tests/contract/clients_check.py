#!/usr/bin/env python3
"""Microsoft's and Jamf's own clients against the emulator over HTTPS (issue 14): MSAL for
Python makes every Entra call the gateway makes, jamf-pro-sdk (macadmins) every Jamf Pro
inventory call, and msgraph-sdk (Microsoft's Graph SDK for Python) every Microsoft Graph call,
each parsing the answers into its typed models; all refuse what the real services would not
send. Starts `portcullis emulator serve` over TLS with a throwaway development CA, runs the
checks, stops it. Fails (exit 1, naming each failed check) when a client cannot use a response.

Usage: clients_check.py PORTCULLIS_BINARY   (run by scripts/contract.sh, in its pinned venv)
"""
import asyncio
import atexit
import datetime
import html.parser
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time

# requests lets these override a session's `verify`: the checks trust only the throwaway CA.
for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
    os.environ.pop(var, None)

import msal

from report import check, failures, poll_until
import requests
from jamf_pro_sdk import JamfProClient, SessionConfig
from jamf_pro_sdk.clients.auth import ApiClientCredentialsProvider
from jamf_pro_sdk.clients.pro_api.pagination import FilterField, SortField
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
import httpx
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.graph_request_adapter import options as graph_default_options
from msgraph.generated.device_management.managed_devices.managed_devices_request_builder import ManagedDevicesRequestBuilder
from msgraph.generated.devices.delta.delta_request_builder import DeltaRequestBuilder
from msgraph.generated.devices.devices_request_builder import DevicesRequestBuilder
from msgraph.generated.devices.item.device_item_request_builder import DeviceItemRequestBuilder
from msgraph.generated.devices_with_device_id.devices_with_device_id_request_builder import DevicesWithDeviceIdRequestBuilder
from msgraph.generated.models.compliance_state import ComplianceState
from msgraph.generated.models.device import Device
from msgraph.generated.models.device_management_partner_tenant_state import DeviceManagementPartnerTenantState
from msgraph.generated.models.management_agent_type import ManagementAgentType
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.item.get_member_objects.get_member_objects_post_request_body import GetMemberObjectsPostRequestBody
from msgraph_core import GraphClientFactory
from msgraph_core.requests.batch_request_content import BatchRequestContent
from msgraph_core.requests.batch_request_item import BatchRequestItem

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


def emulator_up():
    try:
        return http.get(f"{authority}/v2.0/.well-known/openid-configuration", timeout=2).ok
    except requests.ConnectionError:
        return False


poll_until(emulator_up, 15, every=0.1)


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

# 7. Microsoft Graph, through msgraph-sdk: every Graph call the gateway makes, with the gateway's
# query options (crates/sync/src: entra.rs, intune.rs, share.rs, test_connection.rs;
# crates/identity/src/groups.rs), each answer parsed into the SDK's models; then Graph's error
# bodies and query options the gateway does not send today but real Graph answers.
# What the sync selects: the checks ask for what it asks for.
entra_select = [
    "id", "deviceId", "displayName", "accountEnabled", "isCompliant", "isManaged", "trustType", "operatingSystem",
    "operatingSystemVersion", "approximateLastSignInDateTime", "complianceExpirationDateTime",
]
intune_select = [
    "id", "azureADDeviceId", "complianceState", "complianceGracePeriodExpirationDateTime", "managementAgent",
    "lastSyncDateTime", "serialNumber", "userPrincipalName",
]
# The personas' Macs in the emulated directory (crates/emulator/src/personas.rs, directory.rs).
mac = {n: f"d1000000-0000-4000-8000-00000000000{c}" for n, c in (("alice", "a"), ("bob", "b"), ("erin", "e"), ("olivia", "f"))}
group_all_staff, group_engineering = "6a000000-0000-4000-8000-000000000001", "6a000000-0000-4000-8000-000000000002"
nobody = "ffffffff-0000-4000-8000-000000000000"


class AppToken(AccessTokenProvider):
    """The app token for the emulator, and for nothing else: like azure-identity's provider does
    for graph.microsoft.com, it gives none to another host or over plain http, so a paging link
    that left the emulator would go unauthenticated and fail."""

    def __init__(self, token):
        self.token, self.hosts = token, AllowedHostsValidator(["localhost"])

    async def get_authorization_token(self, uri, additional_authentication_context={}):
        ok = uri.startswith("https://") and self.hosts.is_url_host_valid(uri)
        return self.token() if ok else ""

    def get_allowed_hosts_validator(self):
        return self.hosts


def graph_client(transport, token):
    """A GraphServiceClient on the emulator, with the SDK's own middleware (retry on 429/503 with
    Retry-After, redirects, the %24 decoding, telemetry headers) on a client that trusts only the
    throwaway CA."""
    adapter = GraphRequestAdapter(
        BaseBearerTokenAuthenticationProvider(AppToken(token)),
        client=GraphClientFactory.create_with_default_middleware(client=transport, options=graph_default_options),
    )
    adapter.base_url = f"{base}/v1.0"
    return GraphServiceClient(request_adapter=adapter)


def query(builder, **params):
    """A request configuration with the query parameters of `builder` (a request builder class)."""
    return RequestConfiguration(query_parameters=next(
        v for k, v in vars(builder).items() if k.endswith("GetQueryParameters")
    )(**params))


async def odata_error(call):
    """The ODataError a call raised, or what it returned instead."""
    try:
        return await call
    except ODataError as e:
        return e


def is_odata(e, status, code):
    return isinstance(e, ODataError) and e.response_status_code == status and e.error is not None and e.error.code == code


def aware(t):
    return isinstance(t, datetime.datetime) and t.tzinfo is not None


def control(path, body=None):
    """The emulator's control API (not Graph): scenario set-up."""
    http.post(f"{base}/_emulator/{path}", json=body if body is not None else {}).raise_for_status()


async def delta_rounds(g):
    # The sync's first round, with a $top small enough for it to take more than one page.
    page = await g.devices.delta.get(query(DeltaRequestBuilder, select=entra_select, top=2))
    pages, devices = 1, list(page.value or [])
    while page.odata_next_link:
        page = await g.devices.delta.with_url(page.odata_next_link).get()
        pages, devices = pages + 1, devices + list(page.value or [])
    link = page.odata_delta_link
    check("graph delta: pages by @odata.nextLink to an @odata.deltaLink", pages >= 2 and bool(link), (pages, link))
    by_id = {d.device_id: d for d in devices}
    check("graph delta: each registered Mac once, with its object id", sorted(by_id) == sorted(mac.values())
          and len(devices) == len(by_id) and all(d.id for d in devices), [(d.id, d.device_id) for d in devices])
    check("graph delta: isCompliant, isManaged, accountEnabled, trustType",
          by_id[mac["alice"]].is_compliant is True and by_id[mac["bob"]].is_compliant is False
          and all(d.is_managed is True and d.account_enabled is True and d.trust_type == "Workplace" for d in devices),
          [(d.device_id, d.is_compliant, d.is_managed, d.account_enabled, d.trust_type) for d in devices])
    check("graph delta: approximateLastSignInDateTime as an aware datetime, OS and version",
          all(aware(d.approximate_last_sign_in_date_time) and d.operating_system and d.operating_system_version for d in devices),
          [(d.approximate_last_sign_in_date_time, d.operating_system, d.operating_system_version) for d in devices])
    check("graph delta: $select honoured on every page", not any("extensionAttributes" in d.additional_data for d in devices),
          [d.additional_data for d in devices if d.additional_data])

    # A later round from the delta link: only what changed.
    new = "dc0ffee0-0000-4000-8000-00000000c0de"
    control("devices", {"deviceId": new, "displayName": "Contract Mac", "isCompliant": True})
    page = await g.devices.delta.with_url(link).get()
    check("graph delta, next round: only the new Mac, whole", [d.device_id for d in page.value or []] == [new]
          and page.value[0].is_compliant is True and bool(page.odata_delta_link), [(d.id, d.device_id) for d in page.value or []])
    # Graph may send only an updated object's changed properties; the sync then re-reads it by
    # object id with its $select.
    control("settings", {"partial_delta": True})
    try:
        control(f"devices/{new}/compliance", {"isCompliant": False})
        page = await g.devices.delta.with_url(page.odata_delta_link).get()
    finally:
        control("settings", {"partial_delta": False})
    part = (page.value or [None])[0]
    check("graph delta: a partial object, id and isCompliant only", part is not None and part.device_id is None
          and part.is_compliant is False, part)
    whole = await g.devices.by_device_id(part.id).get(query(DeviceItemRequestBuilder, select=entra_select))
    check("GET /devices/{object id}?$select: the whole device", whole.device_id == new and whole.is_compliant is False
          and whole.trust_type == "Workplace" and aware(whole.approximate_last_sign_in_date_time)
          and "extensionAttributes" not in whole.additional_data, whole)
    control(f"devices/{new}/remove", {"reason": "deleted"})
    page = await g.devices.delta.with_url(page.odata_delta_link).get()
    gone = [(d.id, d.additional_data.get("@removed")) for d in page.value or []]
    check("graph delta: a deletion as @removed with its reason", gone == [(part.id, {"reason": "deleted"})], gone)
    # An expired token: 410, which the sync answers with a full round.
    control("delta/expire")
    e = await odata_error(g.devices.delta.with_url(page.odata_delta_link).get())
    check("graph delta: an expired token is a 410 ODataError", isinstance(e, ODataError) and e.response_status_code == 410, e)


async def device_reads(g):
    # Run Test's probe (Device.Read.All).
    one = await g.devices.get(query(DevicesRequestBuilder, top=1, select=["id"]))
    check("GET /devices?$top=1&$select=id: one id only", len(one.value or []) == 1 and one.value[0].id
          and one.value[0].device_id is None and one.value[0].display_name is None, one.value)
    check("GET /devices?$top=1: the next page by @odata.nextLink", bool(one.odata_next_link), one.odata_next_link)
    bob = await g.devices_with_device_id(mac["bob"]).get(query(DevicesWithDeviceIdRequestBuilder, select=entra_select))
    check("GET /devices(deviceId='…')?$select: bob's Mac, not compliant", bob.device_id == mac["bob"]
          and bob.id == "0b" + mac["bob"][2:] and bob.is_compliant is False and aware(bob.approximate_last_sign_in_date_time), bob)
    full = await g.devices.by_device_id(bob.id).get()
    check("GET /devices/{object id}: the same device, extensionAttributes too", full.device_id == mac["bob"]
          and full.display_name == bob.display_name and "extensionAttributes" in full.additional_data, full)
    e = await odata_error(g.devices.by_device_id(nobody).get())
    check("GET /devices/{unknown}: 404 Request_ResourceNotFound", is_odata(e, 404, "Request_ResourceNotFound"), e)
    e = await odata_error(g.devices_with_device_id(nobody).get())
    check("GET /devices(deviceId='unknown'): 404 Request_ResourceNotFound", is_odata(e, 404, "Request_ResourceNotFound"), e)
    e = await odata_error(g.devices.with_url(f"{base}/v1.0/noSuchSegment").get())
    check("an unknown segment: 400 BadRequest, 'Resource not found for the segment'", is_odata(e, 400, "BadRequest")
          and "noSuchSegment" in (e.error.message or ""), e)
    found = await g.devices.get(query(DevicesRequestBuilder, filter=f"deviceId eq '{mac['bob']}'", select=entra_select))
    check("GET /devices?$filter=deviceId eq '…': bob's Mac only", [d.device_id for d in found.value or []] == [mac["bob"]],
          [d.device_id for d in found.value or []])
    # Graph throttling: the SDK's retry handler must understand the emulator's 429.
    control("faults", {"endpoint": "graph", "status": 429, "count": 1, "retry_after": 1})
    started = time.monotonic()
    again = await odata_error(g.devices.get(query(DevicesRequestBuilder, top=1, select=["id"])))
    check("429 with Retry-After: the SDK waits and retries", not isinstance(again, ODataError) and bool(again.value)
          and time.monotonic() - started >= 1, again)


async def intune(g):
    page = await g.device_management.managed_devices.get(query(ManagedDevicesRequestBuilder, select=intune_select, top=999))
    items = list(page.value or [])
    while page.odata_next_link:
        page = await g.device_management.managed_devices.with_url(page.odata_next_link).get()
        items += page.value or []
    erin = next((m for m in items if m.azure_a_d_device_id == mac["erin"]), None)
    check("managedDevices: erin's Mac in grace period, managed by Jamf", erin is not None
          and erin.compliance_state == ComplianceState.InGracePeriod and erin.management_agent == ManagementAgentType.Jamf
          and bool(erin.serial_number) and erin.user_principal_name == "erin@contoso.test", erin)
    now = datetime.datetime.now(datetime.timezone.utc)
    check("managedDevices: grace end (ahead) and last sync as aware datetimes", erin is not None
          and aware(erin.compliance_grace_period_expiration_date_time) and erin.compliance_grace_period_expiration_date_time > now
          and aware(erin.last_sync_date_time), erin)
    check("managedDevices: $select honoured", all(m.operating_system is None and m.device_name is None
          and m.os_version is None for m in items), [(m.operating_system, m.os_version, m.device_name) for m in items])
    one = await g.device_management.managed_devices.get(query(ManagedDevicesRequestBuilder, top=1, select=["id"]))
    check("GET managedDevices?$top=1&$select=id (Run Test)", len(one.value or []) == 1 and bool(one.value[0].id), one.value)
    macs = await g.device_management.managed_devices.get(query(ManagedDevicesRequestBuilder, filter="operatingSystem eq 'macOS'"))
    pcs = await g.device_management.managed_devices.get(query(ManagedDevicesRequestBuilder, filter="operatingSystem eq 'Windows'"))
    check("managedDevices?$filter=operatingSystem eq '…'", [m.azure_a_d_device_id for m in macs.value or []] == [mac["erin"]]
          and not pcs.value, ([m.azure_a_d_device_id for m in macs.value or []], [m.operating_system for m in pcs.value or []]))
    partners = await g.device_management.compliance_management_partners.get()
    jamf_partner = next((p for p in partners.value or [] if "jamf" in (p.display_name or "").lower()), None)
    check("complianceManagementPartners: Jamf enabled, macOS onboarded, a heartbeat (Run Test)", jamf_partner is not None
          and jamf_partner.partner_state == DeviceManagementPartnerTenantState.Enabled and jamf_partner.mac_os_onboarded is True
          and aware(jamf_partner.last_heartbeat_date_time), jamf_partner)


async def groups(g):
    # The gateway's group look-up for token overage: transitive, not only security groups.
    body = GetMemberObjectsPostRequestBody(security_enabled_only=False)
    alice = await g.users.by_user_id("a1000000-0000-4000-8000-000000000001").get_member_objects.post(body)
    check("users/{id}/getMemberObjects: alice's two groups", sorted(alice.value or []) == [group_all_staff, group_engineering], alice)
    olivia = await g.users.by_user_id("olivia@contoso.test").get_member_objects.post(body)
    check("users/{upn}/getMemberObjects: olivia's 250 groups", len(olivia.value or []) == 250, len(olivia.value or []))
    e = await odata_error(g.users.by_user_id(nobody).get_member_objects.post(body))
    check("getMemberObjects, unknown user: 404 Request_ResourceNotFound", is_odata(e, 404, "Request_ResourceNotFound"), e)


def share_batch(g, device_ids, values):
    """The share step's $batch: one PATCH /devices(deviceId='…') of extensionAttributes per device,
    built by the SDK's own request builder and batch content."""
    batch = BatchRequestContent()
    for i, device_id in enumerate(device_ids):
        patch = Device(additional_data={"extensionAttributes": values})
        info = g.devices_with_device_id(device_id).to_patch_request_information(patch)
        # Not add_request_information: msgraph-core 1.5.2 drops its id for a random one.
        batch.add_request(str(i), BatchRequestItem(info, id=str(i)))
    return batch


async def share(g):
    values = {"extensionAttribute1": "managed", "extensionAttribute2": "14.5"}
    answer = await g.batch.post(share_batch(g, [mac["alice"], nobody], values))
    codes = answer.get_response_status_codes()
    check("$batch of PATCH /devices(deviceId='…'): 2xx and 404, per item", 200 <= codes.get("0", 0) < 300 and codes.get("1") == 404, codes)
    alice = await g.devices_with_device_id(mac["alice"]).get()
    written = (alice.additional_data.get("extensionAttributes") or {})
    check("$batch: the extension attributes are on the device", all(written.get(k) == v for k, v in values.items()), written)
    # A throttled item: 429 with its own Retry-After inside the 200, which the share step retries.
    control("faults", {"endpoint": "batch_item", "status": 429, "count": 1, "retry_after": 7})
    try:
        item = (await g.batch.post(share_batch(g, [mac["alice"]], values))).get_response_by_id("0")
    finally:
        http.delete(f"{base}/_emulator/faults").raise_for_status()
    check("$batch: a throttled item is 429 with Retry-After", item is not None and item.status == 429
          and (item.headers or {}).get("Retry-After") == "7", item and (item.status, item.headers))


def transport():
    """HTTP/2 as the SDK's default client, but trusting only the throwaway CA, and neither the
    environment's CA bundle nor its proxies."""
    return httpx.AsyncClient(verify=ssl.create_default_context(cafile=ca), http2=True, trust_env=False, timeout=30)


async def graph_checks():
    # Through MSAL's token cache, as a long-running client renews it.
    app_token = lambda: app.acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"]).get("access_token", "")
    # One transport per client: the SDK's factory wraps the transport it is given in its middleware.
    async with transport() as good, transport() as bad:
        g = graph_client(good, app_token)
        for name, checks in (("devices delta", delta_rounds), ("devices", device_reads), ("Intune", intune),
                             ("groups", groups), ("$batch", share)):
            try:
                await checks(g)
            except Exception as err:  # a response the SDK cannot use: name it, run the other sections
                check(f"msgraph-sdk: the {name} calls", False, repr(err))
        e = await odata_error(graph_client(bad, lambda: "not-an-emulator-token").devices.get())
        check("a token Entra did not issue: 401 InvalidAuthenticationToken", is_odata(e, 401, "InvalidAuthenticationToken"), e)


asyncio.run(graph_checks())

emulator.terminate()
emulator.wait(timeout=10)
import importlib.metadata

versions = ", ".join(
    [f"MSAL {msal.__version__}"] + [f"{p} {importlib.metadata.version(p)}" for p in ("jamf-pro-sdk", "msgraph-sdk")]
)
print(f"{versions}: {'all checks passed' if not failures else str(len(failures)) + ' failed'}")
sys.exit(1 if failures else 0)
