"""Schemathesis hooks for Herald's API (loaded with SCHEMATHESIS_HOOKS=herald_hooks).

A webhook body has rules that JSON Schema cannot state, because they join two fields or
depend on the server's configuration and network. In positive (schema-valid) cases of
`POST /v1/webhooks` and `PATCH /v1/webhooks/{id}` only, this hook makes the generated
body keep them, so that a 400 for one of them is not reported as a valid request
refused; negative cases are sent as generated:

* the URL's host must resolve (and pass the egress guard): where made-up names
  (`https://0.com`) do not resolve, the URL's scheme, host and port are replaced by the
  test receiver's (`HERALD_ST_RECEIVER`, e.g. `http://127.0.0.1:9000`), keeping its
  path and query;
* the secret's format follows the scheme (`whsec_` + base64 of 16 to 64 bytes for
  `standard`, which is the server's default here, `whsk_` + base64 of a 32-byte seed for
  `ed25519`): a secret of the wrong form is replaced by a well-formed one, a PATCH
  that changes the scheme to one of these without a secret gets one (the webhook's
  current secret may not fit the new scheme), and a PATCH that sets a secret without
  naming the scheme names `standard` (the secret must fit the webhook's current scheme,
  which an earlier PATCH may have made `ed25519`);
* a custom header may not reuse the stripe scheme's signature header: such a header is
  dropped.
"""

import os
from urllib.parse import urlsplit, urlunsplit

import schemathesis

RECEIVER = os.environ.get("HERALD_ST_RECEIVER", "")
WEBHOOK_OPERATIONS = {"POST /v1/webhooks", "PATCH /v1/webhooks/{id}"}
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ED25519_SECRET = "whsk_" + "A" * 43 + "="


def _positive(case):
    meta = getattr(case, "meta", None)
    generation = getattr(meta, "generation", None)
    mode = getattr(generation, "mode", None)
    return mode is not None and str(mode) == "positive"


def _receiver_url(url):
    try:
        parts = urlsplit(url)
        receiver = urlsplit(RECEIVER)
    except ValueError:
        return url
    return urlunsplit((receiver.scheme, receiver.netloc, parts.path or "/", parts.query, ""))


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if case.operation.label not in WEBHOOK_OPERATIONS:
        return
    if not _positive(case) or not isinstance(case.body, dict):
        return
    body = case.body
    url = body.get("url")
    if RECEIVER and isinstance(url, str):
        body["url"] = _receiver_url(url)
    signature = body.get("signature")
    scheme = signature.get("scheme") if isinstance(signature, dict) else None
    secret = body.get("secret")
    if secret is None and "secret" not in body and case.operation.label.startswith("PATCH"):
        # A scheme change keeps the current secret, which may not fit the new scheme.
        if scheme == "standard":
            body["secret"] = STANDARD_SECRET
        elif scheme == "ed25519":
            body["secret"] = ED25519_SECRET
    elif isinstance(secret, str):
        if scheme is None and case.operation.label.startswith("PATCH"):
            # The secret must fit the webhook's current scheme, which is server state
            # (an earlier PATCH may have made it ed25519): name the scheme it fits.
            body["signature"] = {"scheme": "standard"}
            scheme = "standard"
        if scheme in (None, "standard") and not secret.startswith("whsec_"):
            body["secret"] = STANDARD_SECRET
        elif scheme == "ed25519" and not secret.startswith("whsk_"):
            body["secret"] = ED25519_SECRET
        elif scheme in (None, "standard", "ed25519"):
            # Prefixed but maybe not base64 of the right length: a known good one.
            body["secret"] = STANDARD_SECRET if scheme != "ed25519" else ED25519_SECRET
    headers = body.get("headers")
    if scheme == "stripe" and isinstance(headers, dict):
        name = signature.get("header", "X-Olympus-Signature")
        if isinstance(name, str):
            for key in [k for k in headers if k.lower() == name.lower()]:
                del headers[key]
