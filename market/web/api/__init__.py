"""The JSON API under ``/api/v1``: thin views over the services, described by OpenAPI 3."""

from market.web.api import accounts, billing, budgets, catalog, docs  # noqa: F401  (registers their operations)
from market.web.api import deals, metering, subscriptions  # noqa: F401
from market.web.api import usage  # noqa: F401
from market.web.api import budget_reports  # noqa: F401
from market.web.api import statements  # noqa: F401
from market.web.api import credit_lines  # noqa: F401
from market.web.api import files  # noqa: F401
from market.web.api.blueprint import api

__all__ = ["api"]
