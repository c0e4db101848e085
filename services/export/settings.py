"""Settings of the export service (env prefix EXPORT_)."""

from __future__ import annotations

import base64
import binascii
from datetime import timedelta
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from shared.catalogue import load_retention
from shared.plumbing.identifiers import SchemaName
from shared.plumbing.keyring import KeyringError, keyring
from shared.plumbing.secrets import SigningKey
from shared.plumbing.settings import ServiceSettings

CONSENT_OWNER = "consent"
CONSENT_CATEGORY = "consent_records"


def default_owners() -> dict[str, list[str]]:
    """Every owner of the retention rules with its categories, plus the consent ledger."""
    owners = {owner: list(cats) for owner, cats in load_retention().owners().items()}
    owners[CONSENT_OWNER] = [CONSENT_CATEGORY]
    return owners


class ExportSettings(ServiceSettings):
    """Required: kafka_bootstrap_servers, database_url, api_token, service_key, link_secret."""

    model_config = SettingsConfigDict(
        env_prefix="EXPORT_", env_nested_delimiter="__", extra="ignore"
    )

    service_name: str = "export"
    db_schema: SchemaName = "export"
    service_key: SecretStr = Field(
        description="Base64 of 32 random bytes: encrypts each request's private key at rest "
        "(a keyring: `kid:base64` lines, current first; older keys still open what they sealed)."
    )
    link_secret: SigningKey = Field(
        description="HMAC key of download links (32+ characters; a keyring: new links are "
        "signed with the current key, links of every listed key verify)."
    )
    owners: dict[str, list[str]] = Field(
        default_factory=default_owners, description="Owner → the categories it holds."
    )
    storage_dir: Path = Path("/var/lib/privacy-plane/export/storage")
    exchange_dir: Path = Path("/var/lib/privacy-plane/export/exchange")
    max_reference_bytes: int = Field(
        512 * 1024 * 1024, gt=0, description="Largest file:// part taken; a bigger one fails."
    )
    delete_referenced_parts: bool = Field(
        True,
        description=(
            "Delete an exchange file once its part is taken in, and the file of a part that "
            "will never be taken (its category erased, its request cancelled or erased): no "
            "copy of a person's data is left behind. False leaves them to their owners."
        ),
    )
    link_ttl: timedelta = timedelta(hours=1)
    bundle_ttl: timedelta = timedelta(days=7)
    public_base_url: str = Field("", description="Prefix of download links, e.g. https://host")
    loop_interval: float = Field(1.0, gt=0)
    assembly_lease: timedelta = timedelta(minutes=10)

    @field_validator("service_key")
    @classmethod
    def _thirty_two_bytes(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("service_key is empty")
        try:
            keys = keyring(value)
        except KeyringError as exc:
            raise ValueError(f"service_key: {exc}") from None
        for key in keys:
            try:
                raw = base64.b64decode(key.value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"service_key {key.kid!r} must be base64") from exc
            if len(raw) != 32:
                raise ValueError(
                    f"service_key {key.kid!r} must be 32 bytes (base64 of 32 random bytes)"
                )
        return value

    def service_keys(self) -> list[tuple[str, bytes]]:
        """The decoded service keys by kid, the current one first (a keyring, see keyring.py)."""
        return [(k.kid, base64.b64decode(k.value)) for k in keyring(self.service_key)]

    def service_key_bytes(self) -> bytes:
        """The decoded current service key."""
        return self.service_keys()[0][1]
