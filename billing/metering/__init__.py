"""Metered calls priced in tokens: the charge, usage reports, postpaid invoices, recognition, credit lines."""
