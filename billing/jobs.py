"""Every scheduled job of billing, in one list.

``JOBS`` names each job, what it does, when the scheduler starts it (cron fields in the
business time zone) and which period a run handles. A job's function lives with the rules it
runs; this module only lists them, so adding a job is one entry here and nothing happens at
import time anywhere. The runner (``billing.runs``) claims each (job, period) once; the
``flask billing`` and ``flask scheduler`` commands (``market.web.cli.billing``) drive it.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from billing.budgets.alerts import run_alert_delivery
from billing.budgets.lines import run_usage_posting
from billing.collection import run_dunning, run_postpaid_invoices, run_renewals
from billing.metering.recognition import run_recognition
from billing.payments.refunds import run_reconciliation
from billing.runs import DAILY, FIVE_MINUTES, MONTHLY, QUARTER_HOUR, Job, daily, five_minutes, quarter_hour
from billing.settlement.workflow import STATEMENT_CLOSE_DAY, run_statement_close
from market.catalog.files import run_upload_expiry
from pricing.periods import day_before, month_before

JOBS: tuple[Job, ...] = (
    Job(name="recognize-usage",
        description="Post yesterday's usage revenue to the ledger, per dataset",
        run=run_recognition, trigger={"hour": 0, "minute": 20}, period_of=day_before,
        period_pattern=DAILY, closes_period=True),
    Job(name="post-usage-to-budgets",
        description="Post yesterday's postpaid API usage to budgets, per dataset",
        run=run_usage_posting, trigger={"hour": 0, "minute": 40}, period_of=day_before,
        period_pattern=DAILY, closes_period=True),
    Job(name="renewals",
        description="Bill the next period of every subscription that is due.",
        run=run_renewals, trigger={"hour": 1, "minute": 0}, period_of=daily,
        period_pattern=DAILY),
    Job(name="close-statements",
        description="Close last month's settlement statements (drafts for review)",
        run=run_statement_close, trigger={"day": STATEMENT_CLOSE_DAY, "hour": 2, "minute": 0},
        period_of=month_before, period_pattern=MONTHLY, closes_period=True),
    Job(name="postpaid-invoices", description="Bill last month's API usage on credit lines.",
        run=run_postpaid_invoices, trigger={"day": 1, "hour": 3, "minute": 0},
        period_of=month_before, period_pattern=MONTHLY, closes_period=True),
    Job(name="dunning",
        description="Retry failed renewal charges; suspend, then cancel, unpaid subscriptions.",
        run=run_dunning, trigger={"hour": 9, "minute": 0}, period_of=daily,
        period_pattern=DAILY),
    Job(name="reconcile-payments",
        description="Ask the payment processor about card payments and refunds left "
                    "unfinished, and find refunds made outside the marketplace",
        run=run_reconciliation, trigger={"minute": "*/15"}, period_of=quarter_hour,
        period_pattern=QUARTER_HOUR),
    Job(name="expire-uploads",
        description="Expire file uploads left pending past UPLOAD_ABANDON_HOURS, freeing their "
                    "parts in the object store",
        run=run_upload_expiry, trigger={"hour": 4, "minute": 30}, period_of=daily,
        period_pattern=DAILY),
    Job(name="deliver-budget-alerts",
        description="E-mail and post (signed webhook) the budget alerts not yet sent",
        run=run_alert_delivery, trigger={"minute": "*/5"}, period_of=five_minutes,
        period_pattern=FIVE_MINUTES),
)

JOBS_BY_NAME: Mapping[str, Job] = MappingProxyType({job.name: job for job in JOBS})
