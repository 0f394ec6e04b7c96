"""Billing's settings: every default is the settings table's, whoever builds them."""

from __future__ import annotations

from dataclasses import asdict

from billing.context import BillingSettings
from market.core.settings import load_config
from pricing.money import Money


def test_the_app_a_bare_mapping_and_the_class_agree_field_by_field(tmp_path):
    app = BillingSettings.from_settings(
        load_config(tmp_path, environ={}, overrides={"SECRET_KEY": "s3cret"}))
    # The certificate key is no setting but the digest of the app's secret, given alike here.
    assert asdict(app) == asdict(BillingSettings.from_settings({"SECRET_KEY": "s3cret"}))
    assert asdict(BillingSettings()) == asdict(BillingSettings.from_settings({}))
    assert BillingSettings().token_pack_price_per_million == Money("20.00", "CNY")
    assert BillingSettings().dunning_retry_days == (1, 3, 7)
    assert app.platform_fee_bps == BillingSettings().platform_fee_bps == 500
