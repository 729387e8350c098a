"""Prepares a load comparison: N distinct valid tokens for alice (compliant Mac) from the demo's
emulator, the emulator's signing key as PEM (for HAProxy's jwt_verify) and the device map
HAProxy looks postures up in. Usage: prepare.py EMULATOR_URL TENANT N OUT_DIR"""

import base64
import concurrent.futures
import json
import sys
import time
import urllib.request

emu, tenant, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


now = int(time.time())


def token(i):
    # A distinct expiry makes a distinct token (and signature) for every i.
    return get(f"{emu}/_emulator/token?persona=alice&exp={now + 3600 + i}")["access_token"]


started = time.time()
with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    tokens = list(pool.map(token, range(n)))
assert len(set(tokens)) == n, "tokens are not distinct"
with open(f"{out}/tokens.txt", "w") as f:
    f.write("\n".join(tokens) + "\n")
print(f"prepare: {n} distinct tokens in {time.time() - started:.1f} s", file=sys.stderr)


def b64(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


kid = json.loads(b64(tokens[0].split(".")[0]))["kid"]
jwk = next(k for k in get(f"{emu}/{tenant}/discovery/v2.0/keys")["keys"] if k["kid"] == kid)


def der_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def der(tag, body):
    return bytes([tag]) + der_len(len(body)) + body


def der_int(raw):
    if raw[0] & 0x80:
        raw = b"\0" + raw
    return der(0x02, raw)


rsa_key = der(0x30, der_int(b64(jwk["n"])) + der_int(b64(jwk["e"])))
alg = der(0x30, der(0x06, bytes.fromhex("2a864886f70d010101")) + b"\x05\x00")
spki = der(0x30, alg + der(0x03, b"\0" + rsa_key))
pem = base64.encodebytes(spki).decode().replace("\n", "")
with open(f"{out}/key.pem", "w") as f:
    f.write("-----BEGIN PUBLIC KEY-----\n")
    f.write("\n".join(pem[i : i + 64] for i in range(0, len(pem), 64)))
    f.write("\n-----END PUBLIC KEY-----\n")

# The personas' Macs as the demo's Entra holds them (DESIGN.md §8).
devices = {
    "d1000000-0000-4000-8000-00000000000a": "compliant",  # alice
    "d1000000-0000-4000-8000-00000000000b": "noncompliant",  # bob
    "d1000000-0000-4000-8000-00000000000e": "compliant",  # erin (in grace)
}
with open(f"{out}/devices.map", "w") as f:
    for d, state in devices.items():
        f.write(f"{d} {state}\n")
