# -*- coding: utf-8 -*-
"""The one GCP credential of a run: Application Default Credentials."""

from __future__ import annotations

DOCUMENTATION = r"""
name: gcp_token
short_description: An access token (or the account) of Application Default Credentials
description:
  - Returns an OAuth2 access token of C(google.auth.default()) with the
    cloud-platform scope, from GOOGLE_APPLICATION_CREDENTIALS, the file of
    C(gcloud auth application-default login), workload identity federation in
    CI, or the metadata server. gcloud is not needed.
  - Tokens are cached in a private file per credential and refreshed when
    less than C(min(300 s, half their lifetime)) is left, so every task of a
    long run carries a valid token and a short run asks for one token.
  - With the term C(email), returns the account the token belongs to (for OS Login).
options:
  _terms:
    description: C(token) (default) or C(email).
"""

import datetime as dt
import hashlib
import json
import os
import tempfile
import time

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
TOKENINFO = "https://oauth2.googleapis.com/tokeninfo"


def _source_id():
    """What identifies the credential: the ADC file's path and content."""
    path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") or os.path.join(
        os.environ.get("CLOUDSDK_CONFIG") or os.path.expanduser("~/.config/gcloud"),
        "application_default_credentials.json",
    )
    try:
        with open(path, "rb") as f:
            content = f.read()
    except OSError:
        content = b"metadata-server"
    return hashlib.sha256(path.encode() + b"\0" + content).hexdigest()[:24]


def _cache_path():
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(base, "img2pdf-gcp-token-%d-%s.json" % (os.getuid(), _source_id()))


def _load(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    left = data.get("expiry", 0) - time.time()
    margin = min(300.0, data.get("lifetime", 3600) / 2.0)
    return data if left > margin else None


def _store(path, data):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".gcp-token-")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _fetch():
    try:
        import google.auth
        import google.auth.transport.requests
        import requests
    except ImportError as e:
        raise AnsibleError("gcp_token needs google-auth and requests on the controller: %s" % e)
    try:
        creds, _ = google.auth.default(scopes=[SCOPE])
        creds.refresh(google.auth.transport.requests.Request())
    except Exception as e:
        raise AnsibleError(
            "No usable Application Default Credentials (%s). On a laptop run "
            "`gcloud auth application-default login` once, or set "
            "GOOGLE_APPLICATION_CREDENTIALS." % e
        )
    expiry = creds.expiry
    if expiry is None:
        expires_at = time.time() + 3600
    else:
        expires_at = expiry.replace(tzinfo=dt.timezone.utc).timestamp()
    email = getattr(creds, "service_account_email", None)
    if not email or email == "default":
        try:
            info = requests.get(TOKENINFO, params={"access_token": creds.token}, timeout=30)
            email = info.json().get("email", "") if info.ok else ""
        except requests.RequestException:
            email = ""
    return {
        "token": creds.token,
        "expiry": expires_at,
        "lifetime": max(1.0, expires_at - time.time()),
        "email": email or "",
    }


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        want = terms[0] if terms else "token"
        if want not in ("token", "email"):
            raise AnsibleError("gcp_token: the term is 'token' or 'email', not %r" % want)
        path = _cache_path()
        data = _load(path)
        if data is None:
            data = _fetch()
            _store(path, data)
        if want == "email" and not data["email"]:
            raise AnsibleError(
                "gcp_token: cannot tell which account the credentials belong to; "
                "set gcp_account=<email>"
            )
        return [data[want]]
