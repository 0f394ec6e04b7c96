"""Money: orders, payments, metering, the ledger, statements, budgets.

It may read the catalogue's and accounts' models but never imports Flask or the HTTP layer.
"""
