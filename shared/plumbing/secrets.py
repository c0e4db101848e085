"""Secret settings: read from `<ENV NAME>_FILE` (Docker secrets) and refused when too short.

Every `SecretStr` setting may come from a file instead of the environment: the variable
named like the setting's own with `_FILE` appended (`CONSENT_API_TOKEN_FILE`,
`EXPORT_KAFKA__SASL_PASSWORD_FILE`, `KAFKA__SASL_PASSWORD_FILE`) holds the file's path, and
the file's content without its trailing newline is the value. Setting both is refused.
Secrets that rotate (`Token`, `HashKey`, `SigningKey`) hold a keyring: several `kid:value`
lines, the current key first (keyring.py); each key must meet the length rule.
"""

from __future__ import annotations

import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import AfterValidator, BaseModel, SecretStr, ValidationInfo
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from shared.plumbing.keyring import LEGACY_KID, KeyringError, keyring

FILE_SUFFIX = "_FILE"


def _at_least(length: int) -> AfterValidator:
    def check(value: SecretStr, info: ValidationInfo) -> SecretStr:
        secret = value.get_secret_value()
        if not secret.strip():
            raise ValueError(f"{info.field_name} is empty")
        if len(secret) < length:
            raise ValueError(
                f"{info.field_name} must be at least {length} characters (it has {len(secret)})"
            )
        return value

    return AfterValidator(check)


def _keys_at_least(length: int) -> AfterValidator:
    """A keyring (see keyring.py) whose every key has at least `length` characters."""

    def check(value: SecretStr, info: ValidationInfo) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError(f"{info.field_name} is empty")
        try:
            keys = keyring(value)
        except KeyringError as exc:
            raise ValueError(f"{info.field_name}: {exc}") from None
        for key in keys:
            if len(key.value) < length:
                which = "" if key.kid == LEGACY_KID else f" key {key.kid!r}"
                raise ValueError(
                    f"{info.field_name}{which} must be at least {length} characters "
                    f"(it has {len(key.value)})"
                )
        return value

    return AfterValidator(check)


NonEmptySecret = Annotated[SecretStr, _at_least(1)]
Token = Annotated[SecretStr, _keys_at_least(16)]
"""API tokens: a keyring, every token accepted (16+ characters each)."""
HashKey = Annotated[SecretStr, _keys_at_least(16)]
"""Keyed-hash keys (consent's pseudonyms): a keyring, 16+ characters each."""
SigningKey = Annotated[SecretStr, _keys_at_least(32)]
"""HMAC signing keys (export's links): a keyring, 32+ characters each."""


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType or origin is Annotated:
        return any(_is_secret(arg) for arg in typing.get_args(annotation))
    return False


def _model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def read_secret_file(variable: str, path: str) -> str:
    """A secret file's content without its trailing newline; errors name the variable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{variable}: cannot read {path}: {exc.__class__.__name__}") from exc
    return text.removesuffix("\n").removesuffix("\r")


class SecretFiles(PydanticBaseSettingsSource):
    """The settings source of `<ENV NAME>_FILE` variables, for every `SecretStr` field."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        config = settings_cls.model_config
        self._environ = {k.upper(): v for k, v in os.environ.items()}
        self._delimiter = config.get("env_nested_delimiter") or "__"
        self._values = self._collect(settings_cls, config.get("env_prefix", "").upper())

    def _collect(self, model: type[BaseModel], prefix: str) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in model.model_fields.items():
            variable = f"{prefix}{name.upper()}"
            nested = _model(field.annotation)
            if nested is not None:
                inner = self._collect(nested, f"{variable}{self._delimiter.upper()}")
                if inner:
                    values[name] = inner
            elif _is_secret(field.annotation) and variable + FILE_SUFFIX in self._environ:
                if variable in self._environ:
                    raise SettingsError(f"set {variable} or {variable}{FILE_SUFFIX}, not both")
                path = self._environ[variable + FILE_SUFFIX]
                values[name] = read_secret_file(variable + FILE_SUFFIX, path)
        return values

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: `__call__` answers for every field at once."""
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._values


class SecretFileSettings(BaseSettings):
    """Base of settings whose secrets may come from files (after the environment's values)."""

    # A refused secret's value must not reach the log through the validation error.
    model_config = SettingsConfigDict(extra="ignore", hide_input_in_errors=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The default sources plus `SecretFiles` (both given for one setting is refused)."""
        return (
            init_settings,
            env_settings,
            SecretFiles(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )
