"""``flask billing`` and ``flask scheduler``: scheduled jobs, run by hand or by the scheduler.

``flask billing jobs`` lists the jobs, their schedules and last runs;
``flask billing run-job NAME [--period P] [--force]`` runs one job for one period (by default the
period a run now would handle, after any missed before it); ``flask scheduler run`` starts the
one APScheduler process that runs every job on its schedule, in ``BUSINESS_TIMEZONE``. Both go
through ``billing.runs.run_job``, so a period is done exactly once however many schedulers and
operators try, and a period is closed only once it has ended in the business zone.

The jobs run are ``SCHEDULED_JOBS``: billing's (``billing.jobs.JOBS``) and those of the web
layer's own modules (``market.web.idempotency``), listed here since ``billing`` sits below them
and may not import them.
"""

from __future__ import annotations

import datetime as dt
import logging

import click
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import func, select

from billing import runs
from billing.jobs import JOBS
from billing.models.statements import SettlementStatement
from billing.errors import GatewayUnavailable
from billing.runs import DAILY, Job, JobContext
from billing.settlement import checkpoints, exports
from billing.settlement.compute import verify_statements
from billing.settlement.ledger import LedgerTransaction
from billing.settlement.ledger_verify import verify_ledger
from billing.settlement.reconciliation import reconcile
from market.core.db import utcnow
from market.web.idempotency import purge_expired
from pricing.money import Money
from pricing.periods import is_month

billing_cli = AppGroup("billing", help="Billing operations: scheduled jobs, statement checks.")
scheduler_cli = AppGroup("scheduler", help="The process that runs the scheduled jobs.")

logger = logging.getLogger("market.scheduler")


def purge_idempotency(ctx: JobContext) -> dict:
    """Delete idempotency records past their expiry (deleting twice deletes nothing more)."""
    with ctx.db.session() as session, session.begin():
        purged = purge_expired(session)
    ctx.progress(f"purged {purged} expired idempotency records")
    return {"purged": purged}


SCHEDULED_JOBS: tuple[Job, ...] = (
    *JOBS,
    Job(name="purge-idempotency", description="Delete expired idempotency records.",
        run=purge_idempotency, trigger={"hour": 3, "minute": 30}, period_of=runs.daily,
        period_pattern=DAILY),
)


def _by_name() -> dict[str, Job]:
    return {job.name: job for job in SCHEDULED_JOBS}


def _run(app: Flask, job: Job, period: str, *, now: dt.datetime, progress,
         force: bool = False) -> runs.JobOutcome:
    return runs.run_job(app.extensions["market.db"], job, period, now=now,
                        settings=app.config, gateway=app.extensions.get("market.gateway"),
                        progress=progress, force=force)


def _schedule(job: Job) -> str:
    return " ".join(f"{field}={value}" for field, value in job.trigger.items())


@billing_cli.command("jobs")
def jobs_command() -> None:
    """List the scheduled jobs, their schedules, next and last runs."""
    registry = _by_name()
    timezone = current_app.config["BUSINESS_TIMEZONE"]
    now = utcnow()
    with current_app.extensions["market.db"].session() as session:
        last = runs.last_runs(session, registry)
    for name, job in sorted(registry.items()):
        trigger = CronTrigger(timezone=timezone, **job.trigger)
        upcoming = trigger.get_next_fire_time(None, now.astimezone(trigger.timezone))
        click.echo(f"{name}: {job.description}")
        click.echo(f"  schedule: {_schedule(job)} ({timezone}); next {upcoming.isoformat()} "
                   f"for period {runs.default_period(job, upcoming, timezone)}")
        run = last.get(name)
        if run is None:
            click.echo("  last run: never")
        else:
            finished = run.finished_at.isoformat() if run.finished_at else "-"
            click.echo(f"  last run: {run.period} {run.status} (started "
                       f"{run.started_at.isoformat()}, finished {finished}) {run.detail or ''}")


@billing_cli.command("run-job")
@click.argument("name")
@click.option("--period", help="The period to handle (default: the one a run now would handle).")
@click.option("--force", is_flag=True, help="Run again even if the period is done.")
def run_job_command(name: str, period: str | None, force: bool) -> None:
    """Run job NAME for one period, once: a done period is skipped unless --force."""
    registry = _by_name()
    job = registry.get(name)
    if job is None:
        raise click.UsageError(f"unknown job {name!r}; the jobs are: {', '.join(sorted(registry))}")
    now = utcnow()
    app = current_app._get_current_object()
    if period is None:
        due = runs.due_periods(app.extensions["market.db"], job, now)
        for missed in due[:-1]:  # caught up first, oldest first
            _report(name, missed, _run(app, job, missed, now=now, progress=click.echo))
        period = due[-1]
    elif not job.accepts(period):
        raise click.UsageError(f"period {period!r} is not valid for {name}: "
                               f"it must match {job.period_pattern}")
    try:
        outcome = _run(app, job, period, now=now, progress=click.echo, force=force)
    except runs.PeriodNotEnded as error:
        raise click.UsageError(str(error)) from None
    _report(name, period, outcome)


def _report(name: str, period: str, outcome: runs.JobOutcome) -> None:
    if outcome.outcome == "already-done":
        click.echo(f"{name} {period} was already done (use --force to run it again): "
                   f"{outcome.summary}")
    elif outcome.outcome == "running-elsewhere":
        click.echo(f"{name} {period} is being run by another process; nothing done")
    else:
        click.echo(f"{name} {period} summary: {outcome.summary}")


def _platform_public_key():
    return checkpoints.signing_key_from_settings(current_app.config).public_key()


@billing_cli.command("verify-statements")
def verify_statements_command() -> None:
    """Check every settlement statement against its hash, the hash signed at its close, and
    (approved ones) the ledger; then the ledger and the checkpoints under them. Name each
    failure and exit 1."""
    public_key = _platform_public_key()
    with current_app.extensions["market.db"].session() as session:
        count = session.scalar(select(func.count()).select_from(SettlementStatement))
        problems = verify_statements(session, public_key)
        # A statement is only as sound as the ledger it was computed from.
        underneath = verify_ledger(session) + checkpoints.verify_checkpoints(session, public_key)
    for statement_id, problem in problems:
        click.echo(f"statement {statement_id}: {problem}", err=True)
    for finding in underneath:
        click.echo(f"under the statements: {finding}", err=True)
    if problems or underneath:
        raise SystemExit(1)
    click.echo(f"{count} statements verified")


@billing_cli.command("export-reconciliation")
@click.argument("period")
@click.option("--format", "extension", type=click.Choice(["csv", "xlsx"]), default="csv",
              show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="The file to write (default: reconciliation-PERIOD.EXT here).")
@click.option("--processor/--no-processor", default=True, show_default=True,
              help="Compare card payments with the card processor (when one is configured).")
def export_reconciliation_command(period: str, extension: str, output: str | None,
                                  processor: bool) -> None:
    """Write PERIOD's reconciliation (YYYY-MM) as CSV or XLSX and print each currency's
    difference; exit 1 when one is not zero."""
    if not is_month(period):
        raise click.BadParameter("give the period as YYYY-MM", param_hint="PERIOD")
    gateway = current_app.extensions.get("market.gateway") if processor else None
    with current_app.extensions["market.db"].session() as session:
        try:
            figures = reconcile(session, period, actor=None, gateway=gateway)
        except GatewayUnavailable as unavailable:
            raise click.ClickException(f"{unavailable.detail} (--no-processor leaves the card "
                                       "processor out)") from None
        names = exports.organization_names(session, figures)
    render = {"csv": exports.reconciliation_csv,
              "xlsx": exports.reconciliation_xlsx}[extension]
    path = output or exports.reconciliation_filename(period, extension)
    with open(path, "wb") as out:
        out.write(render(figures, names))
    click.echo(f"reconciliation of {period} ({figures['from']} to {figures['to']}) "
               f"written to {path}")
    unbalanced = False
    for currency, row in sorted(figures["currencies"].items()):
        click.echo(f"{currency}: difference {Money.from_minor(row['difference'], currency)}")
        unbalanced = unbalanced or row["difference"] != 0
    if unbalanced:
        raise SystemExit(1)
@billing_cli.command("verify-ledger")
def verify_ledger_command() -> None:
    """Check that every ledger transaction balances per currency and matches its seal and its
    source, that the trial balance is zero and every stored balance is its entries' sum; name
    each failure, the first one first, and exit 1."""
    with current_app.extensions["market.db"].session() as session:
        count = session.scalar(select(func.count()).select_from(LedgerTransaction))
        findings = verify_ledger(session)
    if findings:
        click.echo(f"ledger BROKEN: first failure: {findings[0]}", err=True)
        for finding in findings[1:]:
            click.echo(f"  also: {finding}", err=True)
        raise SystemExit(1)
    click.echo(f"ledger sound: {count} transactions balance, match their seals and sources; "
               "trial balance zero in every currency")


def scheduled_run(app: Flask, name: str) -> runs.JobOutcome:
    """What the scheduler calls: run job ``name`` for the period a run now handles, after
    every one missed before it; the outcome of the current period."""
    return runs.run_due(app.extensions["market.db"], _by_name()[name], now=utcnow(),
                        settings=app.config, gateway=app.extensions.get("market.gateway"),
                        progress=logger.info)[-1]


def build_scheduler(app: Flask) -> BlockingScheduler:
    """A scheduler with one cron job per job of ``SCHEDULED_JOBS``, not yet started."""
    timezone = app.config["BUSINESS_TIMEZONE"]
    scheduler = BlockingScheduler(timezone=timezone)
    for name, job in sorted(_by_name().items()):
        scheduler.add_job(
            scheduled_run, CronTrigger(timezone=timezone, **job.trigger), args=(app, name),
            id=name, name=job.description,
            # A run missed while the process was down still happens within the hour, once.
            coalesce=True, max_instances=1, misfire_grace_time=3600, replace_existing=True)
    return scheduler


def register_billing_commands(app: Flask) -> None:
    for group in (billing_cli, scheduler_cli):
        app.cli.add_command(group)


@scheduler_cli.command("run")
def scheduler_run() -> None:
    """Run every job on its schedule until interrupted (one such process is enough)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    scheduler = build_scheduler(current_app._get_current_object())
    for job in scheduler.get_jobs():
        click.echo(f"scheduled {job.id}: {job.trigger}")
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        if scheduler.running:
            scheduler.shutdown()
        click.echo("scheduler stopped")
