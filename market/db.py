"""The name the migration scripts know the column types by (``import market.db``).

Migrations are never edited once written; the types live in ``market.core.db``.
"""

from market.core.db import UTCDateTime

__all__ = ["UTCDateTime"]
