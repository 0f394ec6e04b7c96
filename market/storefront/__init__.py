"""The storefront and consoles: server-rendered pages over the same services as the API."""

from market.storefront import catalog_views, views  # noqa: F401  (registers the routes)
from market.storefront import billing_views  # noqa: F401  (registers the routes)
from market.storefront import deal_views, subscription_views  # noqa: F401  (registers the routes)
from market.storefront import usage_views  # noqa: F401  (registers the routes)
from market.storefront import budget_views  # noqa: F401  (registers the routes)
from market.storefront import statement_views  # noqa: F401  (registers the routes)
from market.storefront import credit_line_views  # noqa: F401  (registers the routes)
from market.storefront.blueprint import storefront

__all__ = ["storefront"]
