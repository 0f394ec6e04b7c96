"""The storefront and consoles: server-rendered pages over the same services as the API."""

from market.web.storefront import catalog_views, views  # noqa: F401  (registers the routes)
from market.web.storefront import billing_views  # noqa: F401  (registers the routes)
from market.web.storefront import deal_views, subscription_views  # noqa: F401  (registers the routes)
from market.web.storefront import usage_views  # noqa: F401  (registers the routes)
from market.web.storefront import budget_views  # noqa: F401  (registers the routes)
from market.web.storefront import statement_views  # noqa: F401  (registers the routes)
from market.web.storefront import credit_line_views  # noqa: F401  (registers the routes)
from market.web.storefront import file_views  # noqa: F401  (registers the routes)
from market.web.storefront.blueprint import storefront
from market.web.storefront.file_routes import storefront_json

__all__ = ["storefront", "storefront_json"]
