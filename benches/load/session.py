#!/usr/bin/env python3
"""Signs a persona in through the demo gateway's browser flow (gateway -> emulator sign-in page
-> persona -> form_post back to the callback) and prints the session cookie as a `Cookie:`
header value, for load tests of requests that carry a browser session.

Usage: session.py GATEWAY_BASE_URL PERSONA [PATH]
"""
import html
import re
import sys
import urllib.parse
import urllib.request


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def main():
    base, persona = sys.argv[1], sys.argv[2]
    path = sys.argv[3] if len(sys.argv) > 3 else "/hello"
    # Cookies by hand: the gateway's are `__Host-` (Secure), which a cookie jar keeps off plain
    # HTTP; the load test sends them to the plain-HTTP listener, as a TLS-terminating front would.
    jar = {}
    opener = urllib.request.build_opener(NoRedirect)

    def call(url, data=None):
        headers = {"Accept": "text/html"}
        if url.startswith(base) and jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        req = urllib.request.Request(url, data=data, headers=headers)
        try:
            r = opener.open(req, timeout=10)
        except urllib.error.HTTPError as e:
            r = e
        if url.startswith(base):
            for c in r.headers.get_all("Set-Cookie") or []:
                name, _, rest = c.partition("=")
                value = rest.split(";", 1)[0]
                if value and "max-age=0" not in c.lower():
                    jar[name.strip()] = value
                else:
                    jar.pop(name.strip(), None)
        return r.status, r.headers, r.read().decode()

    def inputs(page):
        out = []
        for frag in page.split("<input")[1:]:
            name = re.search(r'name="?([^" >]+)', frag)
            value = re.search(r'value="([^"]*)"', frag)
            if name and value:
                out.append((name.group(1), html.unescape(value.group(1))))
        return out

    status, headers, _ = call(base + path)
    assert status == 302, f"expected a redirect to sign in, got {status}"
    authorize = headers["Location"]
    status, _, page = call(authorize)
    assert status == 200 and persona in page, f"sign-in page: {status}"
    form = inputs(page) + [("persona", persona)]
    status, _, page = call(authorize, urllib.parse.urlencode(form).encode())
    assert status == 200, f"persona choice: {status}"
    action = html.unescape(re.search(r'action="([^"]+)"', page).group(1))
    fields = dict(inputs(page))
    status, _, _ = call(action, urllib.parse.urlencode({"code": fields["code"], "state": fields["state"]}).encode())
    assert status == 303, f"callback: {status}"
    status, _, _ = call(base + path)
    assert status == 200, f"with the session: {status}"
    print("; ".join(f"{k}={v}" for k, v in jar.items()))


if __name__ == "__main__":
    main()
