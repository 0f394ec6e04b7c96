"""A Python client for the data marketplace API (``/api/v1``).

    from market_client import MarketClient, PaymentRequired

    with MarketClient("dmk_live_...", "https://market.example") as market:
        page = market.records(dataset_id=7, number=1, limit=50, max_tokens=20_000)
        print(page.usage.tokens, page.tokens_remaining, page.has_more)
"""

from market_client.client import API_PREFIX, MarketClient, __version__, new_idempotency_key
from market_client.endpoints import ENDPOINTS, Endpoint
from market_client.errors import (
    APIConnectionError, APIError, AuthenticationError, BadRequest, Conflict, InvalidInput,
    MarketClientError, NotFound, PaymentRequired, PermissionDenied, RateLimited, ServerError,
    ServiceUnavailable,
)
from market_client.models import Amount, Cursor, RateLimits, RecordPage, Usage

__all__ = [
    "API_PREFIX", "ENDPOINTS", "APIConnectionError", "APIError", "Amount",
    "AuthenticationError", "BadRequest", "Conflict", "Cursor", "Endpoint", "InvalidInput",
    "MarketClient", "MarketClientError", "NotFound", "PaymentRequired", "PermissionDenied",
    "RateLimited", "RateLimits", "RecordPage", "ServerError", "ServiceUnavailable", "Usage",
    "__version__", "new_idempotency_key",
]
