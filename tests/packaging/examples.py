"""One valid `data` of every v1 event type, as plain JSON (what a producer in any language sends)."""

from __future__ import annotations

from typing import Any

AT = "2026-12-06T10:00:00Z"
LATER = "2027-01-05T10:00:00Z"
SHA256 = "ab" * 32

EXAMPLES: dict[str, dict[str, Any]] = {
    "account.signed_up.v1": {
        "account_id": "acc_7",
        "jurisdiction": "DE",
        "policy_version": "2026-10",
        "consents": [{"purpose": "marketing_email", "granted": True}],
    },
    "account.closed.v1": {"account_id": "acc_7", "closed_at": AT},
    "account.reopened.v1": {"account_id": "acc_7", "reopened_at": AT},
    "subscription.changed.v1": {"account_id": "acc_7", "plan": "pro", "crm_retention_days": 90},
    "consent.granted.v1": {
        "purpose": "marketing_email",
        "source": "web_form",
        "expires_at": LATER,
        "evidence": {"ip_hash": "h_1", "user_agent": "Mozilla/5.0"},
    },
    "consent.withdrawn.v1": {"purpose": "marketing_email", "source": "email_link"},
    "consent.gpc_signal.v1": {"source": "web_form"},
    "processing.restricted.v1": {"purposes": ["profiling"], "reason": "accuracy contested"},
    "processing.objected.v1": {"purposes": ["marketing_email"]},
    "restriction.lifted.v1": {"categories": ["crm_data"]},
    "erasure.requested.v1": {"request_id": "req_81", "verified_by": "support:agent_12"},
    "export.requested.v1": {"request_id": "req_82", "verified_by": "self-service"},
    "rectification.requested.v1": {
        "request_id": "req_83",
        "category": "crm_data",
        "fields": {"email": "new@example.com"},
    },
    "request.cancelled.v1": {"request_id": "req_81"},
    "request.extended.v1": {"request_id": "req_81", "reason": "complex", "new_deadline": LATER},
    "legal_hold.placed.v1": {
        "hold_id": "hold_1",
        "scope": "account",
        "account_id": "acc_7",
        "reason": "court_order",
    },
    "legal_hold.released.v1": {"hold_id": "hold_1"},
    "deletion.completed.v1": {"job_id": "job_1", "owner": "crm", "records_deleted": 3},
    "deletion.failed.v1": {"job_id": "job_1", "owner": "crm", "error": "timeout"},
    "rectification.completed.v1": {"job_id": "job_2", "owner": "crm"},
    "rectification.failed.v1": {"job_id": "job_2", "owner": "crm", "error": "no such field"},
    "export.part.v1": {
        "job_id": "job_3",
        "request_id": "req_82",
        "owner": "crm",
        "category": "crm_data",
        "part_index": 0,
        "part_count": 1,
        "location": "file:///exchange/job_3/crm_data-0.json",
        "sha256": SHA256,
        "record_count": 2,
    },
    "export.part_failed.v1": {
        "job_id": "job_3",
        "request_id": "req_82",
        "owner": "crm",
        "error": "store unavailable",
        "retryable": True,
    },
    "consent.state.v1": {
        "version": 2,
        "purposes": {
            "marketing_email": {"state": "granted", "allowed": True, "basis": "consent"},
            "transactional_email": {"state": "default", "allowed": True, "basis": "contract"},
        },
        "gpc": False,
    },
    "deletion.job.v1": {
        "job_id": "job_1",
        "owner": "crm",
        "category": "crm_data",
        "mode": "delete",
        "reason": "erasure_request",
        "request_id": "req_81",
        "due_by": LATER,
    },
    "export.job.v1": {
        "job_id": "job_3",
        "request_id": "req_82",
        "owner": "crm",
        "categories": ["crm_data"],
        "due_by": LATER,
        "public_key": "A" * 43 + "=",
    },
    "rectification.job.v1": {
        "job_id": "job_2",
        "request_id": "req_83",
        "owner": "crm",
        "category": "crm_data",
        "fields": {"email": "new@example.com"},
        "due_by": LATER,
    },
    "request.status.v1": {
        "request_id": "req_81",
        "kind": "erasure",
        "status": "partially_completed",
        "deadline": LATER,
        "outcomes": [
            {"category": "crm_data", "outcome": "deleted", "owner": "crm"},
            {"category": "invoices", "outcome": "retained", "reason": "legal obligation: tax"},
        ],
    },
    # rolling retention (1.1.0)
    # restriction jobs and receipts (1.1.0)
    "restriction.job.v1": {
        "job_id": "job_5",
        "owner": "crm",
        "category": "crm_data",
        "grounds": "needed_for_legal_claims",
        "due_by": LATER,
    },
    "restriction.lifted_job.v1": {
        "job_id": "job_6",
        "owner": "crm",
        "category": "crm_data",
        "due_by": LATER,
    },
    "restriction.completed.v1": {"job_id": "job_5", "owner": "crm"},
    "restriction.failed.v1": {"job_id": "job_5", "owner": "crm", "error": "timeout"},
    "purge.job.v1": {
        "job_id": "job_4",
        "owner": "analytics",
        "category": "usage_data",
        "before": LATER,
        "keep": "P13M",
        "due_by": LATER,
    },
    "purge.completed.v1": {"job_id": "job_4", "owner": "analytics", "records_deleted": 9},
    "purge.failed.v1": {"job_id": "job_4", "owner": "analytics", "error": "timeout"},
    # disclosures to authorities (1.1.0)
    "disclosure.recorded.v1": {
        "disclosure_id": "disc_1",
        "authority": "Amtsgericht Berlin-Mitte",
        "authority_kind": "court",
        "legal_basis": "GDPR Art. 6(1)(c)",
        "reference": "AZ 123 Js 456/26",
        "categories": ["crm_data"],
        "disclosed_at": LATER,
        "disclosed_by": "legal:staff_42",
        "secret_until": LATER,
    },
    # policy changes and notices (1.1.0)
    "policy.published.v1": {
        "version": "2027-01",
        "effective_at": LATER,
        "summary": "A new analytics provider.",
        "changes": [{"purpose": "analytics_providers", "reconsent_required": True}],
    },
    "notice.job.v1": {
        "job_id": "job_5",
        "owner": "messaging",
        "policy_version": "2027-01",
        "effective_at": LATER,
        "summary": "A new analytics provider.",
        "reconsent_purposes": ["analytics_providers"],
        "due_by": LATER,
    },
    # evidence checkpoints (1.2.0)
    "audit.checkpoint.v1": {
        "log": "consent.ledger",
        "number": 1,
        "after_seq": 0,
        "upto_seq": 2,
        "count": 2,
        "root": "ab" * 32,
        "leaves": "0123456789abcdef",
        "prev_hash": "0" * 64,
        "created_at": LATER,
        "key_id": "0123456789abcdef",
        "hash": "cd" * 32,
        "signature": "c2lnbmF0dXJl",
    },
}
