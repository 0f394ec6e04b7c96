"""Accounts: organizations and their roles, people and memberships, API keys, authorization."""
