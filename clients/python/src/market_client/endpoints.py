"""The operations this client calls, as the marketplace's OpenAPI document names them.

One row per client method: its HTTP method, its path under ``/api/v1``, and the names of the
query parameters or body members it sends. The methods are written by hand (a typed signature
reads better than a generated one), and the repository's test suite compares every row with the
app's ``/api/v1/openapi.json``, so a renamed path or parameter fails there, not at a customer.
"""

from __future__ import annotations

from dataclasses import dataclass

PAGE = ("cursor", "limit")


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    query: tuple[str, ...] = ()
    body: tuple[str, ...] = ()
    # Charged per call: it carries an Idempotency-Key even as a GET, so a retry is not charged.
    metered: bool = False
    # Answers {"items": [...], "next_cursor": ...} and takes ``cursor`` and ``limit``.
    paginated: bool = False


_VERSION = "/datasets/{dataset_id}/versions/{number}"

ENDPOINTS: dict[str, Endpoint] = {
    "me": Endpoint("GET", "/me"),
    "iter_keys": Endpoint("GET", "/keys", query=PAGE, paginated=True),
    "create_key": Endpoint("POST", "/keys", body=(
        "name", "scopes", "requests_per_minute", "tokens_per_minute", "monthly_token_cap",
        "expires_at")),
    "get_key": Endpoint("GET", "/keys/{key_id}"),
    "revoke_key": Endpoint("POST", "/keys/{key_id}/revoke"),
    "iter_datasets": Endpoint("GET", "/datasets", query=(
        "q", "sector", "modality", "ai_stage", "licence", "grade", "model", "sort") + PAGE,
        paginated=True),
    "get_dataset": Endpoint("GET", "/datasets/{dataset_id}"),
    "get_version": Endpoint("GET", _VERSION),
    "records": Endpoint("GET", _VERSION + "/records", query=PAGE + ("max_tokens",),
                        metered=True),
    "search": Endpoint("POST", _VERSION + "/search",
                       body=("query", "limit", "cursor", "max_tokens"), metered=True),
    "count_tokens": Endpoint("POST", "/tokens/count", body=("text", "record", "encoding")),
    "report_usage": Endpoint("POST", "/usage/events", body=("events",)),
    "usage": Endpoint("GET", "/usage", query=("from", "to", "group_by")),
    "buy_token_pack": Endpoint("POST", "/token-packs", body=(
        "millions", "dataset_id", "payment_method", "budget_line_id",
        "purchase_order_number")),
    "iter_orders": Endpoint("GET", "/orders", query=PAGE, paginated=True),
    "get_order": Endpoint("GET", "/orders/{order_id}"),
    "pay_order": Endpoint("POST", "/orders/{order_id}/pay", body=("method", "payment_method")),
    "holdings": Endpoint("GET", "/holdings"),
    "iter_audit_log": Endpoint("GET", "/audit-log", query=("action",) + PAGE, paginated=True),
}
