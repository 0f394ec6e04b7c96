"""Helpers of the metered-API tests: a funded wallet and the two metered calls."""

from __future__ import annotations

from billing import entitlements


def fund(session, org, tokens, scope="platform"):
    wallet = entitlements.get_wallet(session, org.id, scope)
    entitlements.change_wallet(session, wallet, tokens, kind="grant",
                               reference=f"test-grant:{org.id}:{scope}:{tokens}")
    session.commit()
    return wallet


def records(client, shop, headers, **query):
    return client.get(f"/api/v1/datasets/{shop['dataset'].id}/versions/1/records",
                      headers=headers, query_string=query)


def search(client, shop, headers, **body):
    return client.post(f"/api/v1/datasets/{shop['dataset'].id}/versions/1/search",
                       headers=headers, json=body)
