"""Pricing for the data marketplace: money, offers, rating, quotes, tax,
revenue allocation and token counting.

A pure package: it imports only the standard library and tiktoken (an
import-linter contract, "pricing is pure", checks this in CI). Everything
that prices, charges or splits money in the marketplace calls it.

Bad input raises a ``pricing.errors.PricingError`` whose ``field`` names the
input at fault; the API layer answers it with a 422.
"""

from .allocation import (
    BPS_TOTAL,
    AllocatedPayment,
    allocate,
    allocate_refund,
    split_minor,
    validate_shares,
)
from .errors import (
    CurrencyMismatch,
    EncodingIntegrityError,
    FloatNotAllowed,
    InvalidAmount,
    InvalidMeasure,
    InvalidMilestones,
    InvalidOffer,
    InvalidOption,
    InvalidPeriod,
    InvalidPrice,
    InvalidQuantity,
    InvalidRecord,
    InvalidShares,
    InvalidTaxRate,
    InvalidTiers,
    OverRefund,
    PricingError,
    UncountableText,
    UnknownCurrency,
    UnknownEncoding,
    UnknownTokenProfile,
    UnsupportedOffer,
    field_prefix,
)
from .money import CURRENCY_MINOR_UNITS, Money, UnitPrice, minor_units
from .offers import (
    TOKENS_PER_MILLION,
    CustomQuote,
    MallPackage,
    MeteredRateCard,
    Milestone,
    MilestoneKind,
    Offer,
    Period,
    RoyaltyRateCard,
    SubscriptionPlan,
    Tier,
    TierMode,
    offer_from_dict,
)
from .proration import BillingPeriod, Proration, cancel, change_plan, days_remaining, prorate
from .quotes import Quote, QuoteLine, quote
from .rating import LineItem, Rating, Usage, price_tiers, rate
from .tax import (
    DATA_SERVICES_VAT_CN,
    BuyerTaxStatus,
    TaxedAmount,
    TaxMode,
    apply_tax,
    offer_tax_rate,
    parse_tax_rate,
)
from .tokens import (
    DEFAULT_ENCODING,
    ENCODING_NAMES,
    canonical_json,
    count_record,
    count_records,
    count_text,
    count_text_stream,
    count_texts,
    get_encoding,
)

__all__ = [
    # money
    "Money",
    "UnitPrice",
    "CURRENCY_MINOR_UNITS",
    "minor_units",
    # offers
    "Period",
    "TierMode",
    "Tier",
    "SubscriptionPlan",
    "MallPackage",
    "MilestoneKind",
    "Milestone",
    "CustomQuote",
    "MeteredRateCard",
    "RoyaltyRateCard",
    "Offer",
    "offer_from_dict",
    "TOKENS_PER_MILLION",
    # rating
    "Usage",
    "LineItem",
    "Rating",
    "rate",
    "price_tiers",
    # proration
    "BillingPeriod",
    "Proration",
    "days_remaining",
    "prorate",
    "change_plan",
    "cancel",
    # tax and quotes
    "DATA_SERVICES_VAT_CN",
    "TaxMode",
    "BuyerTaxStatus",
    "TaxedAmount",
    "parse_tax_rate",
    "offer_tax_rate",
    "apply_tax",
    "Quote",
    "QuoteLine",
    "quote",
    # allocation
    "BPS_TOTAL",
    "validate_shares",
    "allocate",
    "allocate_refund",
    "split_minor",
    "AllocatedPayment",
    # tokens
    "DEFAULT_ENCODING",
    "ENCODING_NAMES",
    "canonical_json",
    "get_encoding",
    "count_text",
    "count_record",
    "count_texts",
    "count_records",
    "count_text_stream",
    # errors
    "PricingError",
    "UnknownCurrency",
    "CurrencyMismatch",
    "FloatNotAllowed",
    "InvalidAmount",
    "InvalidPrice",
    "InvalidQuantity",
    "InvalidTiers",
    "InvalidShares",
    "InvalidTaxRate",
    "InvalidPeriod",
    "InvalidOffer",
    "InvalidMilestones",
    "InvalidOption",
    "UnsupportedOffer",
    "OverRefund",
    "UnknownEncoding",
    "InvalidRecord",
    "UncountableText",
    "UnknownTokenProfile",
    "InvalidMeasure",
    "EncodingIntegrityError",
    "field_prefix",
]
