"""Signed download links: an HMAC over request id, bundle id and expiry (no token needed)."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote, urlencode


def signature(secret: bytes, request_id: str, bundle_id: str, expires: int) -> str:
    """Hex HMAC-SHA256 of the link's parts."""
    message = f"{request_id}\x1f{bundle_id}\x1f{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def valid(secret: bytes, request_id: str, bundle_id: str, expires: int, sig: str) -> bool:
    """True when `sig` signs exactly these parts (constant-time compare)."""
    return hmac.compare_digest(signature(secret, request_id, bundle_id, expires), sig)


def download_path(secret: bytes, request_id: str, bundle_id: str, expires: int) -> str:
    """The path and query of a download link."""
    query = urlencode(
        {"expires": expires, "sig": signature(secret, request_id, bundle_id, expires)}
    )
    return f"/v1/downloads/{quote(bundle_id, safe='')}?{query}"
