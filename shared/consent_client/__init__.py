"""Consent for downstream Python services: a local cache of `consent.state`, a filter, and a
client of the decisions API for services that ask per call.

Install with the `client` extra (`pip install 'privacy-plane[client]'`): aiokafka, FastStream,
prometheus-client, httpx — no database, no PyYAML.
"""

from shared.consent_client.cache import (
    CONTRACT_PURPOSES,
    ConsentCache,
    Outcome,
    SubjectConsent,
    catalogue_defaults,
)
from shared.consent_client.client import ConsentClient
from shared.consent_client.decisions import Decision, DecisionError, DecisionsClient
from shared.consent_client.middleware import ConsentFilter, kafka_key_subject

__all__ = [
    "CONTRACT_PURPOSES",
    "ConsentCache",
    "ConsentClient",
    "ConsentFilter",
    "Decision",
    "DecisionError",
    "DecisionsClient",
    "Outcome",
    "SubjectConsent",
    "catalogue_defaults",
    "kafka_key_subject",
]
