"""SSL policies and SSL certificates (self-managed and Google-managed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..common import (
    Res,
    content_fingerprint,
)
from ..discovery import ApiError
from .generic import (
    defaults,
    fp_view,
)
from .refs import (
    Key,
)

if TYPE_CHECKING:
    from ..state import FakeGcpState


# https://cloud.google.com/load-balancing/docs/ssl-policies-concepts: profile
# COMPATIBLE and minimum TLS 1.0 unless set; CUSTOM needs customFeatures.
SSL_PROFILE_FEATURES = {
    "COMPATIBLE": ["TLS_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
    "MODERN": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
    "RESTRICTED": ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"],
}


@defaults("sslPolicies")
def _ssl_policy(state: FakeGcpState, k: Key, res: Res, old: Res | None) -> None:
    profile = res.setdefault("profile", "COMPATIBLE")
    res.setdefault("minTlsVersion", "TLS_1_0")
    if profile == "CUSTOM" and not res.get("customFeatures"):
        raise ApiError(400, "Custom features must be specified for the CUSTOM profile.")
    if profile != "CUSTOM" and res.get("customFeatures"):
        raise ApiError(400, "Custom features may only be given with the CUSTOM profile.")
    res["enabledFeatures"] = sorted(res.get("customFeatures") or SSL_PROFILE_FEATURES[profile])
    res["fingerprint"] = content_fingerprint(fp_view(res))


@defaults("sslCertificates")
def _ssl_certificate(state: FakeGcpState, k: Key, res: Res, old: Res | None) -> None:
    res.setdefault("type", "SELF_MANAGED")
    if res["type"] == "MANAGED":
        domains = res.get("managed", {}).get("domains") or []
        if not domains:
            raise ApiError(400, "Required field 'resource.managed.domains' not specified")
        if "certificate" in res or "privateKey" in res:
            raise ApiError(400, "Managed certificates cannot carry a certificate or key.")
        res["managed"] = {
            "domains": domains,
            "status": "PROVISIONING",
            "domainStatus": {d: "PROVISIONING" for d in domains},
        }
        res["subjectAlternativeNames"] = domains
    else:
        if "certificate" not in res or "privateKey" not in res:
            raise ApiError(400, "Required field 'resource.certificate' not specified")
        res.pop("privateKey", None)
        res.setdefault("expireTime", "2035-01-01T00:00:00.000-08:00")
