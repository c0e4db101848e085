"""Consent for downstream Python services: a local cache of `consent.state` and a filter.

Install with the `client` extra (`pip install 'privacy-plane[client]'`): aiokafka, FastStream,
prometheus-client — no database, no PyYAML.
"""

from shared.consent_client.cache import (
    CONTRACT_PURPOSES,
    ConsentCache,
    Outcome,
    SubjectConsent,
    catalogue_defaults,
)
from shared.consent_client.client import ConsentClient
from shared.consent_client.middleware import ConsentFilter, kafka_key_subject

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
