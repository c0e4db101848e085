"""Consent for downstream Python services: a local cache of `consent.state` and a filter.

Other teams install it as `privacy_plane.consent_client` (`pip install
'privacy-plane-contract[client]'`): aiokafka, FastStream, prometheus-client — no database, no
PyYAML. Imports inside this package are relative so that both names work.
"""

from .cache import (
    CONTRACT_PURPOSES,
    ConsentCache,
    Outcome,
    SubjectConsent,
    catalogue_defaults,
)
from .client import ConsentClient
from .middleware import ConsentFilter, kafka_key_subject

__all__ = [
    "CONTRACT_PURPOSES",
    "ConsentCache",
    "ConsentClient",
    "ConsentFilter",
    "Outcome",
    "SubjectConsent",
    "catalogue_defaults",
    "kafka_key_subject",
]
