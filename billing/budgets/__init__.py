"""Buyers' budgets: budget lines, guards on spending, alerts and purchase reports."""
