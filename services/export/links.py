"""Signed download links: an HMAC over request id, bundle id and expiry (no token needed).

The link secret is a keyring: a new link is signed with the current key and names its kid
(`kid=` in the query); a link verifies while its key is listed. A link without a kid (made
before keys had ids) is checked against every listed key.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote, urlencode

from shared.plumbing.keyring import Key, Keyring


def signature(secret: bytes, request_id: str, bundle_id: str, expires: int) -> str:
    """Hex HMAC-SHA256 of the link's parts."""
    message = f"{request_id}\x1f{bundle_id}\x1f{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def valid(
    secret: bytes | Keyring,
    request_id: str,
    bundle_id: str,
    expires: int,
    sig: str,
    kid: str | None = None,
) -> bool:
    """True when `sig` signs exactly these parts under the key `kid` names (else any listed
    key, for links made before kids); constant-time compare, every candidate checked."""
    ok = False
    for candidate in _candidates(secret, kid):
        ok |= hmac.compare_digest(signature(candidate, request_id, bundle_id, expires), sig)
    return ok


def _candidates(secret: bytes | Keyring, kid: str | None) -> list[bytes]:
    if isinstance(secret, bytes):
        return [secret] if kid is None else []
    if kid is None:
        return [k.encoded() for k in secret]
    key: Key | None = secret.get(kid)
    return [] if key is None else [key.encoded()]


def download_path(secret: bytes | Keyring, request_id: str, bundle_id: str, expires: int) -> str:
    """The path and query of a download link (signed with the current key, named by `kid`)."""
    query: dict[str, str | int] = {"expires": expires}
    if isinstance(secret, Keyring):
        query["kid"] = secret.current.kid
        key = secret.current.encoded()
    else:
        key = secret
    query["sig"] = signature(key, request_id, bundle_id, expires)
    return f"/v1/downloads/{quote(bundle_id, safe='')}?{urlencode(query)}"
