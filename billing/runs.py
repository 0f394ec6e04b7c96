"""Running scheduled jobs: each (job, period) exactly once, whichever process asks.

A job is a plain function of a ``JobContext``; it commits its own units of work
(``with ctx.db.session() as s, s.begin():``), each guarded by a unique constraint so that a unit
done twice is a no-op, and returns a summary dict that is stored with its run.

``run_job`` claims the pair (job, period) in a ``job_runs`` row before calling the job, in a short
transaction of its own: the unique (job, period) makes a second claim fail, whichever process or
host makes it. A ``done`` run is never repeated (unless forced), a ``running`` one belongs to
whoever claimed it, and a ``failed`` one may be taken over by exactly one process (a conditional
UPDATE that only one can win).

Which jobs there are is ``billing.jobs.JOBS``, one list; the modules that hold job functions
import this one, which imports none of them. It knows nothing of Flask or APScheduler: the
``flask billing`` and ``flask scheduler`` commands (``market.web.cli.billing``) drive it.

Periods are days and months of the business calendar (``BUSINESS_TIMEZONE``, the
``Database``'s ``calendar``), the same calendar the scheduler's cron triggers run in. A job that
*closes* a period (``closes_period``: recognizing a day's usage, invoicing a month) never runs
for one that has not ended in that zone — asked to, ``run_job`` raises ``PeriodNotEnded`` and
claims nothing — and ``run_due`` catches up: it runs every period after the latest one done,
oldest first, up to the period a run now handles, so a scheduler that was down for three days
closes all three.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError

from billing.models.operations import JobRun, JobRunStatus
from market.core.db import Database, utcnow
from pricing.periods import DAY_PATTERN, MONTH_PATTERN, BusinessCalendar, next_month, parse_month

if TYPE_CHECKING:  # the runner hands the gateway on; payments' jobs import the runner
    from billing.payments.gateway import CardGateway

DAILY = DAY_PATTERN
MONTHLY = MONTH_PATTERN
QUARTER_HOUR = r"\d{4}-\d{2}-\d{2}T\d{2}:[0-5]\d"
FIVE_MINUTES = r"\d{4}-\d{2}-\d{2}T\d{2}:[0-5][05]"


def daily(moment: dt.datetime) -> str:
    """The day a run at ``moment`` handles: that day itself, e.g. ``2026-11-23``."""
    return moment.date().isoformat()


def quarter_hour(moment: dt.datetime) -> str:
    """The quarter hour a run at ``moment`` handles, e.g. ``2026-11-23T10:15``."""
    return moment.replace(minute=moment.minute - moment.minute % 15).strftime("%Y-%m-%dT%H:%M")


def five_minutes(moment: dt.datetime) -> str:
    """The five minutes a run at ``moment`` handles, e.g. ``2026-11-23T10:05``."""
    return moment.replace(minute=moment.minute - moment.minute % 5).strftime("%Y-%m-%dT%H:%M")


# At most this many missed periods are caught up in one run (a year of days): an older gap is
# an operator's to close by hand (``flask billing run-job NAME --period P``).
MAX_CATCH_UP = 366


class PeriodNotEnded(ValueError):
    """A job that closes a period was asked to run for one that has not ended yet."""


@dataclass
class JobContext:
    """What a job is given: where to work, which period, and how to report."""

    db: Database
    period: str
    now: dt.datetime  # UTC
    settings: Mapping[str, Any]
    gateway: CardGateway | None
    progress: Callable[[str], None]

    @property
    def calendar(self) -> BusinessCalendar:
        return self.db.calendar


@dataclass(frozen=True)
class Job:
    name: str
    description: str
    run: Callable[[JobContext], dict]
    trigger: dict  # APScheduler cron fields, in the business time zone
    period_of: Callable[[dt.datetime], str]  # given the business zone's local time
    period_pattern: str = DAILY
    # Closes a business day or month (DAILY or MONTHLY): runs only once it has ended, and
    # catches up every one missed since the latest done.
    closes_period: bool = False

    def accepts(self, period: str) -> bool:
        return re.fullmatch(self.period_pattern, period) is not None

    def __post_init__(self) -> None:
        if self.closes_period and self.period_pattern not in (DAILY, MONTHLY):
            raise ValueError(f"job {self.name!r} closes periods, so they must be days or months")


def default_period(job: Job, now: dt.datetime, calendar: BusinessCalendar | str) -> str:
    """The period a run at ``now`` handles, reckoned on the business calendar."""
    if isinstance(calendar, str):
        calendar = BusinessCalendar(calendar)
    return job.period_of(calendar.local(now))


def period_end(job: Job, period: str, calendar: BusinessCalendar) -> dt.datetime | None:
    """The UTC instant at which ``period`` ends in the business zone (None: a job that does
    not close periods)."""
    if not job.closes_period:
        return None
    if job.period_pattern == DAILY:
        return calendar.day_bounds(dt.date.fromisoformat(period))[1]
    return calendar.month_bounds(period)[1]


def _following(job: Job, period: str) -> str:
    if job.period_pattern == DAILY:
        return (dt.date.fromisoformat(period) + dt.timedelta(days=1)).isoformat()
    parse_month(period)
    return next_month(period)


def due_periods(db: Database, job: Job, now: dt.datetime) -> list[str]:
    """The periods a run at ``now`` handles, oldest first: the current one and, for a job that
    closes periods, every one after the latest done (at most ``MAX_CATCH_UP``)."""
    name = job.name
    current = default_period(job, now, db.calendar)
    if not job.closes_period:
        return [current]
    with db.session() as session:
        latest = session.scalar(
            select(JobRun.period).where(JobRun.job == name, JobRun.status == JobRunStatus.DONE,
                                        JobRun.period <= current)
            .order_by(JobRun.period.desc()).limit(1))
    if latest is None or latest >= current:
        return [current]
    periods = []
    period = _following(job, latest)
    while period <= current:
        periods.append(period)
        period = _following(job, period)
    return periods[-MAX_CATCH_UP:]


def run_due(db: Database, job: Job, *, now: dt.datetime | None = None,
            settings: Mapping[str, Any], gateway: CardGateway | None = None,
            progress: Callable[[str], None] = print) -> list[JobOutcome]:
    """Run ``job`` for every period ``due_periods`` names, oldest first; the first failure
    is raised (a later period is never closed over an earlier one that failed)."""
    now = now or utcnow()
    return [run_job(db, job, period, now=now, settings=settings, gateway=gateway,
                    progress=progress)
            for period in due_periods(db, job, now)]


@dataclass(frozen=True)
class JobOutcome:
    """What ``run_job`` did: ``ran``, ``already-done`` or ``running-elsewhere``."""

    job: str
    period: str
    outcome: str
    summary: dict

    @property
    def ran(self) -> bool:
        return self.outcome == "ran"


def run_job(db: Database, job: Job, period: str, *, now: dt.datetime | None = None,
            settings: Mapping[str, Any], gateway: CardGateway | None = None,
            progress: Callable[[str], None] = print, force: bool = False) -> JobOutcome:
    """Run ``job`` for ``period`` unless it is done or running elsewhere.

    Exactly once per (job, period) across processes: the run is claimed in ``job_runs`` first.
    A failed run is re-run; ``force`` re-runs a done one too (and takes over one left
    ``running`` by a process that died), which is safe because jobs are idempotent per unit.
    The job's exception is recorded on the run and re-raised.
    """
    name = job.name
    if not job.accepts(period):
        raise ValueError(f"period {period!r} does not match {job.period_pattern} for job {name}")
    now = now or utcnow()
    if now.tzinfo is None:
        raise ValueError("naive datetime given where UTC is required")
    end = period_end(job, period, db.calendar)
    if end is not None and now < end:
        raise PeriodNotEnded(
            f"{name}: {period} has not ended yet in {db.calendar.timezone}; it can be run from "
            f"{db.calendar.local(end).isoformat()}")
    claim = _claim(db, name, period, force=force)
    if isinstance(claim, JobOutcome):
        progress(f"{name} {period}: {claim.outcome}")
        return claim
    run_id, started_at = claim
    progress(f"{name} {period}: started")
    context = JobContext(db=db, period=period, now=now.astimezone(dt.timezone.utc),
                         settings=settings, gateway=gateway, progress=progress)
    try:
        summary = job.run(context)
    except Exception as error:
        _finish(db, run_id, started_at, JobRunStatus.FAILED,
                {"error": f"{type(error).__name__}: {error}"})
        progress(f"{name} {period}: failed: {error}")
        raise
    summary = dict(summary or {})
    _finish(db, run_id, started_at, JobRunStatus.DONE, summary)
    progress(f"{name} {period}: done")
    return JobOutcome(job=name, period=period, outcome="ran", summary=summary)


def advisory_lock_key(name: str, period: str) -> int:
    """A signed 64-bit key for (job, period), the same in every process.

    Python's ``hash()`` is salted per process, so it cannot name a lock two processes share.
    """
    digest = hashlib.blake2b(f"job-run\0{name}\0{period}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _claim(db: Database, name: str, period: str, *,
           force: bool) -> tuple[int, dt.datetime] | JobOutcome:
    """Claim (job, period) in one short transaction: the run's id and start, or why not."""
    with db.session() as session, session.begin():
        if db.is_postgresql:
            # The unique index alone would make a second claimer's INSERT wait for the first
            # claim transaction to end; the transaction-scoped advisory lock makes it give up at
            # once instead, and keeps the read-then-write of a failed row below to one claimer
            # at a time. It goes with the transaction, so a crashed process never leaves it held.
            # (SQLite needs none: BEGIN IMMEDIATE already admits one writer at a time.)
            locked = session.execute(text("SELECT pg_try_advisory_xact_lock(:key)"),
                                     {"key": advisory_lock_key(name, period)}).scalar_one()
            if not locked:
                return JobOutcome(name, period, "running-elsewhere", {})
        run = _find(session, name, period)
        if run is None:
            started_at = utcnow()
            try:
                with session.begin_nested():
                    run = JobRun(job=name, period=period, status=JobRunStatus.RUNNING, detail={},
                                 started_at=started_at)
                    session.add(run)
            except IntegrityError:
                # Another process claimed it between our read and our insert.
                run = _find(session, name, period)
            else:
                return run.id, started_at
        if run.status == JobRunStatus.RUNNING and not force:
            return JobOutcome(name, period, "running-elsewhere", {"started_at": str(run.started_at)})
        if run.status == JobRunStatus.DONE and not force:
            return JobOutcome(name, period, "already-done", dict(run.detail or {}))
        # A failed run (or any run, forced) is taken over by whoever changes it first: the
        # UPDATE matches only the row as it was read, so of two takers one changes no row.
        started_at = utcnow()
        taken = session.execute(
            update(JobRun)
            .where(JobRun.id == run.id, JobRun.status == run.status,
                   JobRun.started_at == run.started_at)
            .values(status=JobRunStatus.RUNNING, started_at=started_at, finished_at=None,
                    detail={})
            .execution_options(synchronize_session=False)
        ).rowcount
        if taken != 1:
            return JobOutcome(name, period, "running-elsewhere", {})
        return run.id, started_at


def _find(session, name: str, period: str) -> JobRun | None:
    return session.scalars(
        select(JobRun).where(JobRun.job == name, JobRun.period == period)
        .execution_options(populate_existing=True)).one_or_none()


def _finish(db: Database, run_id: int, started_at: dt.datetime, status: JobRunStatus,
            detail: dict) -> None:
    with db.session() as session, session.begin():
        # Only the claim we made: if a forced run took it over meanwhile, that run reports.
        session.execute(
            update(JobRun)
            .where(JobRun.id == run_id, JobRun.status == JobRunStatus.RUNNING,
                   JobRun.started_at == started_at)
            .values(status=status, detail=detail, finished_at=utcnow())
            .execution_options(synchronize_session=False))


def last_runs(session, names: Iterable[str]) -> dict[str, JobRun]:
    """The most recently started run of each named job (one query per job: there are few)."""
    latest = {}
    for name in names:
        run = session.scalars(select(JobRun).where(JobRun.job == name)
                              .order_by(JobRun.started_at.desc(), JobRun.id.desc())
                              .limit(1)).first()
        if run is not None:
            latest[name] = run
    return latest
