"""schemathesis hooks for api_check.py's run without a credential: authentication comes before
anything else, so every operation answers 401 whatever the request holds."""
import schemathesis


@schemathesis.check
def unauthenticated_is_401(ctx, response, case):
    sent = {k.lower() for k in response.request.headers}
    if "authorization" not in sent and response.status_code != 401:
        raise AssertionError(f"{case.method} {case.path}: {response.status_code} without a credential, not 401")
