"""The sandbox's example actions, proposed through Signoff's own Actions API at first start:
one of each kind the seed APIs have. FloKit's budget shift and creative pause (with their
signals, guardrails and rollback conditions, from FloKit's own documentation), a
Fieldkit-style sales-order change, and a Flowdash-style task with its own buttons.

Each write carries a stable ``Idempotency-Key``: a start that dies half way through seeding
and starts again replays what was proposed instead of proposing it twice.
"""

from __future__ import annotations

from typing import Any, Final

from api.client import SignoffClient

# Bump when the examples change, so a fresh seed is not taken for a replay of the old one.
SEED_VERSION: Final = "v1"

# FloKit's two example actions, from its own documentation: what the sandbox proposes here, and
# what the tests' fake FloKit serves (tests/fakes/flokit.py), one definition for both.
FLOKIT_ACTIONS: Final[dict[str, dict[str, Any]]] = {
    "budget_shift": {
        "title": "Shift 20% budget from TikTok Broad to Meta Search",
        "rationale": (
            "Meta Search cohort (Jan) reached payback in 16 days vs. TikTok Broad at 34 days. Reallocating "
            "$4,400/week is projected to improve blended ROAS by 0.3x."
        ),
        "expected_impact": {"metric": "blended_roas_30d", "direction": "increase", "magnitude": 0.3},
        "data_signals": [
            {"label": "Meta Search 30-day ROAS", "value": "2.31x"},
            {"label": "TikTok Broad 30-day ROAS", "value": "0.91x"},
            {"label": "Meta Search payback days", "value": "16"},
            {"label": "TikTok Broad payback days", "value": "34"},
        ],
        "guardrail_checks": [
            {"check": "minimum_cohort_size", "passed": True, "detail": "Meta Search cohort n=1,989"},
            {"check": "statistical_confidence", "passed": True, "detail": "95% confidence in ROAS delta"},
            {"check": "spend_change_within_limit", "passed": True, "detail": "Shift is 20% of campaign budget"},
        ],
        "rollback_conditions": [
            "If blended ROAS drops >15% within 7 days of execution",
            "If Meta Search trial conversion rate falls below 0.65",
        ],
    },
    "creative_pause": {
        "title": "Pause creative TK_VID_042 — fatigue detected",
        "rationale": (
            "Creative TK_VID_042 has served 1.2M impressions in 8 days. CTR has declined 61% from launch. Trial "
            "conversion for this creative is now below the campaign floor (0.48 vs. 0.65 floor)."
        ),
        "expected_impact": {"metric": "campaign_trial_conversion_rate", "direction": "increase", "magnitude": 0.06},
        "data_signals": [
            {"label": "Impressions (8 days)", "value": "1.2M"},
            {"label": "CTR since launch", "value": "−61%"},
            {"label": "Trial conversion", "value": "0.48 (floor 0.65)"},
        ],
        "guardrail_checks": [
            {"check": "minimum_impressions", "passed": True, "detail": "1.2M impressions, over 100k"},
            {
                "check": "replacement_creative_ready",
                "passed": False,
                "detail": "No approved replacement in the campaign",
            },
        ],
        "rollback_conditions": ["If campaign trial conversion rate falls below 0.5 within 3 days of execution"],
    },
}


def _flokit(
    action_type: str, *, target: dict[str, str], payload: dict[str, str], correlation_id: str
) -> dict[str, Any]:
    """One of FloKit's example actions as a proposal to Signoff's own Actions API."""
    example = FLOKIT_ACTIONS[action_type]
    return {
        "action_type": action_type,
        "title": example["title"],
        "rationale": example["rationale"],
        "target": target,
        "payload": payload,
        "expected_impact": example["expected_impact"],
        "data_signals": example["data_signals"],
        "guardrail_checks": example["guardrail_checks"],
        "rollback_conditions": example["rollback_conditions"],
        "correlation_id": correlation_id,
    }


EXAMPLES: Final[tuple[tuple[str, dict[str, Any]], ...]] = (
    (
        "flokit-budget-shift",
        _flokit(
            "budget_shift",
            target={"type": "campaign", "id": "meta-search"},
            payload={
                "from_campaign": "TikTok Broad",
                "to_campaign": "Meta Search",
                "share": "20%",
                "weekly_amount": "$4,400",
            },
            correlation_id="sandbox-flokit-act_01hx4j7k9m2n3p5q6r8s",
        ),
    ),
    (
        "flokit-creative-pause",
        _flokit(
            "creative_pause",
            target={"type": "creative", "id": "TK_VID_042"},
            payload={"creative": "TK_VID_042", "campaign": "TikTok Broad"},
            correlation_id="sandbox-flokit-act_01hx4j7k9m2n3p5q6r9t",
        ),
    ),
    (
        "fieldkit-sales-order",
        {
            "action_type": "update_sales_order_status",
            "schema_version": 1,
            "title": "Move sales order SO-1042 to production",
            "rationale": "All parts are in stock and the customer confirmed the drawings.",
            "target": {"type": "sales_order", "id": "c3a1af57-2f5a-4e85-98b1-23b3501fa9d4"},
            "scope": "FULFILLMENT",
            "mode": "EXECUTE",
            "preconditions": {"expected_status": "ready"},
            "payload": {"status": "in_production"},
            "correlation_id": "5df4f2e5-cc45-4e75-bf69-f056eae5b7c3",
            "causation_id": "98de5f35-4c21-4c1a-8d13-2d1b2b4c9e9d",
        },
    ),
    (
        "flowdash-task",
        {
            "action_type": "review_task",
            "title": "Review vendor invoice #8812 (Acme Tooling, $2,340)",
            "rationale": "The invoice is 12% over the purchase order; the workflow waits for a reviewer.",
            "target": {"type": "task", "id": "abc123/678"},
            "payload": {"workflow": "Vendor invoices", "amount": "$2,340", "purchase_order": "$2,090"},
            # A workflow's own steps, as Flowdash names them: more than a card shows as buttons,
            # so the last ones are in its overflow menu.
            "options": [
                {"key": "edHR10", "label": "Pay invoice", "decision": "APPROVE"},
                {"key": "PvHaOO", "label": "Send back to vendor", "decision": "REJECT"},
                {"key": "Fl4gAu", "label": "Pay and flag for audit", "decision": "APPROVE"},
                {"key": "CrN0te", "label": "Ask for a credit note", "decision": "REJECT"},
                {"key": "D1sput", "label": "Dispute the amount", "decision": "REJECT"},
                {"key": "H0ldPO", "label": "Hold until the PO is amended", "decision": "REJECT"},
            ],
        },
    ),
)


async def seed(api: SignoffClient) -> list[str]:
    """Propose every example (a replay for those proposed before); their action ids."""
    ids = []
    for name, body in EXAMPLES:
        fields = dict(body)
        action_type = fields.pop("action_type")
        answer = await api.submit(action_type, idempotency_key=f"sandbox-seed-{SEED_VERSION}-{name}", **fields)
        ids.append(str(answer["action_id"]))
    return ids
