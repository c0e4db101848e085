"""Consent for downstream Python services: a local cache of `consent.state`, a filter, and a
client of the decisions API for services that ask per call.

Other teams install it as `privacy_plane.consent_client` (`pip install
'privacy-plane-contract[client]'`): aiokafka, FastStream, prometheus-client, httpx — no database,
no PyYAML. Imports inside this package are relative so that both names work.
"""

from .cache import (
    CONTRACT_PURPOSES,
    DEFAULT_ALLOWED,
    ConsentCache,
    Outcome,
    SubjectConsent,
    catalogue_defaults,
)
from .client import ConsentClient
from .decisions import Decision, DecisionError, DecisionsClient
from .middleware import ConsentFilter, kafka_key_subject

__all__ = [
    "CONTRACT_PURPOSES",
    "DEFAULT_ALLOWED",
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
