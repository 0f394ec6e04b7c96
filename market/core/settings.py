"""Settings, read from the environment when the app is built (never at import).

Every setting the marketplace reads is listed in ``SETTINGS`` with its default and meaning; the
README's configuration table is generated from the same list (``flask market settings``), so the
two cannot drift apart.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _timezone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = value.strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"not an IANA time zone: {value!r}") from None
    return name


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        chosen = value.strip().lower()
        if chosen not in choices:
            raise ValueError(f"one of {', '.join(choices)}, not {value!r}")
        return chosen
    return parse


@dataclass(frozen=True)
class Setting:
    name: str
    default: object
    help: str
    parse: Callable[[str], object] = str


SETTINGS: tuple[Setting, ...] = (
    Setting("MARKET_ENV", "development",
            "`production` refuses to start without SECRET_KEY and DATABASE_URL."),
    Setting("SECRET_KEY", None,
            "Signs sessions and CSRF tokens. Outside production a random key is kept in "
            "`instance/secret_key`."),
    Setting("DATABASE_URL", None,
            "SQLAlchemy URL. Default: SQLite file `instance/market.db`. Production: "
            "`postgresql+psycopg://user@host/db`."),
    Setting("SESSION_COOKIE_SECURE", True,
            "Send the session cookie over HTTPS only (browsers also accept it on localhost).", _bool),
    Setting("MAX_CONTENT_LENGTH", 16 * 1024 * 1024,
            "Largest request body in bytes; larger ones get 413.", int),
    Setting("API_KEY_MODE", "live",
            "`live` or `test`: the typed prefix of new API keys (`dmk_live_` / `dmk_test_`)."),
    Setting("PASSWORD_TIME_COST", 3, "Argon2id iterations for password hashes.", int),
    Setting("PASSWORD_MEMORY_KIB", 65536, "Argon2id memory in KiB for password hashes.", int),
    Setting("LOGIN_FREE_FAILURES", 5,
            "Failed sign-ins for one e-mail from one address before each further one doubles "
            "the wait (429 with Retry-After); other addresses are not slowed.", int),
    Setting("LOGIN_FREE_FAILURES_PER_IP", 30,
            "Failed sign-ins from one address, for any e-mails, before its waits begin.", int),
    Setting("LOGIN_BACKOFF_SECONDS", 30, "The first wait once the free failures are used.", int),
    Setting("LOGIN_MAX_BACKOFF_SECONDS", 86_400, "The longest wait between sign-in tries.", int),
    Setting("IDEMPOTENCY_TTL_HOURS", 24, "How long a stored Idempotency-Key response is replayed.", int),
    Setting("IMPORT_MAX_BYTES", 2 * 1024 ** 3,
            "Largest dataset file accepted by an import, in bytes (larger: 413).", int),
    Setting("UPLOAD_PART_MAX_BYTES", 64 * 1024 ** 2,
            "Largest part of a file upload sent through the app, in bytes (larger: 413). Every "
            "part but the last has at least 5 MiB, as S3 requires.", int),
    Setting("UPLOAD_ABANDON_HOURS", 72,
            "A file upload still pending this many hours after it started is expired by the "
            "expire-uploads job, and its parts are freed in the object store.", int),
    Setting("IMPORT_MAX_RECORD_BYTES", 1024 ** 2,
            "Largest record (one JSONL line, one CSV record, or its canonical JSON) an import "
            "accepts, in bytes; checked while the file is read (larger: 422 naming the line).",
            int),
    Setting("JSON_MAX_DEPTH", 64,
            "Deepest nesting of arrays and objects in an API request body (deeper: 422).", int),
    Setting("IMPORT_MAX_JSON_DEPTH", 64,
            "Deepest nesting of arrays and objects in an imported JSON record (deeper: 422).",
            int),
    Setting("LISTING_REVIEW_DAYS", 5,
            "Days an exchange has to review a listing submission (its due date).", int),
    Setting("DEFAULT_CURRENCY", "CNY", "Currency of new organizations and offers."),
    Setting("TOKEN_ENCODING", "o200k_base",
            "tiktoken encoding for token counts (`o200k_base` or `cl100k_base`), loaded offline."),
    Setting("BABEL_DEFAULT_LOCALE", "zh_CN", "Page language when Accept-Language names none we have."),
    Setting("PLATFORM_FEE_BPS", 500,
            "The platform's fee, in basis points of each payment's net (the rest is shared by "
            "the supply chain).", int),
    Setting("TOKEN_PACK_PRICE_PER_MILLION", "20.00",
            "Price of one million platform-wide prepaid tokens, in DEFAULT_CURRENCY (empty: "
            "platform-wide packs are not sold)."),
    Setting("INVOICE_DUE_DAYS", 15, "Days a buyer has to pay a bank-transfer invoice.", int),
    Setting("STATEMENT_REVIEW_DAYS", 5,
            "Days an exchange has to review a settlement statement after its period is closed "
            "(its due date).", int),
    Setting("DUAL_CONTROL_THRESHOLD", "10000.00",
            "Amount (in the money's own currency) from which a bank receipt or a statement "
            "adjustment waits for a second person's approval (maker-checker); 0: always."),
    Setting("PAYEE_BANK_ACCOUNT", "",
            "The platform's bank account printed on invoices for bank transfer (对公转账)."),
    Setting("STRIPE_SECRET_KEY", "",
            "Stripe secret key; when set, card payments go through Stripe. Empty: bank transfer "
            "only."),
    Setting("STRIPE_PUBLISHABLE_KEY", "", "Stripe publishable key, for Stripe.js in the browser."),
    Setting("STRIPE_API_BASE", "",
            "Another Stripe API address (a local Stripe server); empty: api.stripe.com."),
    Setting("STRIPE_JS_URL", "https://js.stripe.com/v3/",
            "Where the checkout page loads Stripe.js from."),
    Setting("STRIPE_WEBHOOK_SECRET", "", "Signing secret of the Stripe webhook endpoint."),
    Setting("DUNNING_RETRY_DAYS", "1,3,7",
            "Days after a failed renewal on which it is retried; after the last, access is "
            "suspended."),
    Setting("DUNNING_CANCEL_DAYS", 14,
            "Days a suspended subscription waits for payment before it is cancelled.", int),
    Setting("REDIS_URL", "",
            "Redis for the API's rate-limit counters and sign-in throttling, shared by every worker (`redis://host:6379/0`"
            "). Empty: counters are kept per process."),
    Setting("DEFAULT_REQUESTS_PER_MINUTE", 600,
            "Requests per minute of an API key that sets no limit of its own.", int),
    Setting("DEFAULT_TOKENS_PER_MINUTE", 5_000_000,
            "Tokens per minute served to an API key that sets no limit of its own.", int),
    Setting("BUSINESS_TIMEZONE", "Asia/Shanghai",
            "IANA time zone of the marketplace's business days, months and fiscal years (usage "
            "recognition, postpaid invoices, statement periods, budgets, reports) and of the "
            "scheduled jobs' clock. Timestamps are stored in UTC.", _timezone),
    Setting("PLATFORM_SIGNING_KEY", None,
            "Ed25519 private key (PEM file) that signs the audit and ledger checkpoints. "
            "Outside production one is generated in `instance/platform_signing_key.pem`."),
    Setting("SMTP_HOST", "",
            "Mail server for budget alerts and registration links. Empty: no alert e-mail is "
            "sent (webhooks still are) and registration links are written to the log."),
    Setting("SMTP_PORT", 25, "Its port (587 for submission with STARTTLS).", int),
    Setting("SMTP_FROM", "", "Sender of budget alerts and account mail. Empty: `budgets@` and "
            "`accounts@` the SMTP_HOST."),
    Setting("SMTP_USERNAME", "", "Login at the mail server; empty: none."),
    Setting("SMTP_PASSWORD", "", "Its password."),
    Setting("SMTP_STARTTLS", False, "Upgrade the mail connection with STARTTLS before login.",
            _bool),
    Setting("CREDIT_LINE_APPROVAL_THRESHOLD", "100000.00",
            "A credit line change raising the limit by more than this (in the line's currency) "
            "waits for a second finance approver. Empty: none does."),
    Setting("OBJECT_STORE", "local",
            "Where dataset files are stored, each once under its SHA-256: `local` (a directory, "
            "OBJECT_STORE_ROOT) or `s3` (an S3-compatible bucket: AWS S3, Aliyun OSS, MinIO, "
            "Ceph RGW).", _one_of("local", "s3")),
    Setting("OBJECT_STORE_ROOT", None,
            "The local object store's directory. Default: `instance/objects`."),
    Setting("S3_BUCKET", "", "The bucket of the `s3` object store."),
    Setting("S3_ENDPOINT_URL", "",
            "The S3 server's address (`https://oss-cn-beijing.aliyuncs.com`, a MinIO or Ceph "
            "RGW URL); empty: AWS S3."),
    Setting("S3_REGION", "", "The bucket's region (`cn-beijing`, `us-east-1`); empty: boto3's "
            "default."),
    Setting("S3_ACCESS_KEY_ID", "",
            "Access key of the object store; empty: boto3's own chain (environment, instance "
            "role)."),
    Setting("S3_SECRET_ACCESS_KEY", "", "Its secret."),
    Setting("S3_ADDRESSING_STYLE", "auto",
            "`path` (bucket in the path: MinIO, Ceph on a bare host name), `virtual` (bucket in "
            "the host name: Aliyun OSS requires it) or `auto` (boto3 chooses).",
            _one_of("auto", "path", "virtual")),
)


def load_config(instance_path: str | os.PathLike, environ: Mapping[str, str] | None = None,
                overrides: Mapping[str, object] | None = None) -> dict:
    """Build the app's settings from an environment mapping (``os.environ`` by default).

    ``overrides`` (the ``config`` given to ``create_app``) win over the environment.
    """
    environ = os.environ if environ is None else environ
    if environ.get("SCHEDULER_TIMEZONE") and not environ.get("BUSINESS_TIMEZONE"):
        # The old name set the scheduler's zone only; reading it silently would change what a
        # business day is. Say so instead.
        raise RuntimeError("setting SCHEDULER_TIMEZONE: renamed BUSINESS_TIMEZONE, which now "
                           "also defines business days, months and fiscal years")
    config: dict[str, object] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.name)
        if raw is None or raw == "":
            config[setting.name] = setting.default
        else:
            try:
                config[setting.name] = setting.parse(raw)
            except ValueError as exc:
                raise RuntimeError(f"setting {setting.name}: {exc}") from None

    config.update(overrides or {})
    instance = Path(instance_path)
    production = config["MARKET_ENV"] == "production"
    if config["DATABASE_URL"] is None:
        if production:
            raise RuntimeError("DATABASE_URL must be set in production")
        config["DATABASE_URL"] = f"sqlite:///{instance / 'market.db'}"
    if config["OBJECT_STORE_ROOT"] is None:
        config["OBJECT_STORE_ROOT"] = str(instance / "objects")
    if config["SECRET_KEY"] is None:
        if production:
            raise RuntimeError("SECRET_KEY must be set in production")
        config["SECRET_KEY"] = _instance_secret(instance)
    if config["PLATFORM_SIGNING_KEY"] is None:
        if production:
            raise RuntimeError("PLATFORM_SIGNING_KEY must be set in production")
        config["PLATFORM_SIGNING_KEY"] = str(instance / "platform_signing_key.pem")
    if config["API_KEY_MODE"] not in {"live", "test"}:
        raise RuntimeError("setting API_KEY_MODE: must be `live` or `test`")

    fixed = dict(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="market_session",
        PERMANENT_SESSION_LIFETIME=12 * 3600,
        WTF_CSRF_TIME_LIMIT=None,  # tied to the session instead, which already expires
        BABEL_TRANSLATION_DIRECTORIES="translations",
        JSON_SORT_KEYS=False,
    )
    for name, value in fixed.items():
        config.setdefault(name, value)
    return config


def _instance_secret(instance: Path) -> str:
    """A per-installation random key, so development sessions survive restarts."""
    path = instance / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        instance.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32)
        path.write_text(key)
        path.chmod(0o600)
        return key
