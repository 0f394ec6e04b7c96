"""Operator commands: ``flask db``, ``flask market``, ``flask audit`` and ``flask pricing``.

Each command is one unit of work: ``with session.begin():`` commits once at the end, or not at
all if anything fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from alembic import command as alembic
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import func, select

from billing.settlement import checkpoints
from billing.models import IntegrityCheckpoint
from market.core import audit
from market.web import schema
from market.web.cli.billing import register_billing_commands
from market.web.cli.finance import finance_cli
from market.web.cli.pricing import pricing_cli
from market.core.settings import SETTINGS
from market.web.cli.demo import seed_demo, seed_demo_catalog, seed_demo_purchases
from market.web.cli.demo_files import seed_demo_file_datasets

db_cli = AppGroup("db", help="Schema migrations (Alembic).")
market_cli = AppGroup("market", help="Marketplace operations.")
audit_cli = AppGroup("audit", help="The hash-chained audit log.")


def _database():
    return current_app.extensions["market.db"]


def _alembic_config():
    return schema.alembic_config(current_app.config["DATABASE_URL"])


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Build or update the schema to REVISION (default: the newest)."""
    alembic.upgrade(_alembic_config(), revision)
    click.echo(f"schema upgraded to {revision}")


@db_cli.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Take the schema back to REVISION."""
    alembic.downgrade(_alembic_config(), revision)
    click.echo(f"schema downgraded to {revision}")


@db_cli.command("current")
def db_current() -> None:
    """Show the schema's revision."""
    alembic.current(_alembic_config(), verbose=True)


@db_cli.command("revision")
@click.option("-m", "--message", required=True)
@click.option("--autogenerate", is_flag=True, help="Diff the models against the database.")
def db_revision(message: str, autogenerate: bool) -> None:
    """Write a new migration (read and correct it before committing)."""
    alembic.revision(_alembic_config(), message=message, autogenerate=autogenerate)


@db_cli.command("check")
def db_check() -> None:
    """Fail when the models and the migrated schema differ."""
    differences = schema.drift(current_app.config["DATABASE_URL"])
    for difference in differences:
        click.echo(f"drift: {difference}")
    if differences:
        sys.exit(1)
    click.echo("models and migrations agree")


@market_cli.command("seed-demo")
def seed_demo_command() -> None:
    """Create demo organizations of every role and their users (idempotent)."""
    with _database().session() as session, session.begin():
        credentials = seed_demo(session, current_app.extensions["market.passwords"])
        session.flush()  # the catalogue's demo acts as the people just created
        datasets = seed_demo_catalog(session, current_app.config["TOKEN_ENCODING"])
        session.flush()  # the purchases buy the datasets just listed
        purchases = seed_demo_purchases(session, current_app.extensions["market.billing"])
        datasets += seed_demo_file_datasets(session, current_app.extensions["market.objects"])
    for title in datasets:
        click.echo(f"Demo dataset: {title}")
    for line in purchases:
        click.echo(f"Demo purchase: {line}")
    click.echo("Demo accounts (e-mail / password / organization / roles):")
    for row in credentials:
        click.echo(f"  {row.email:32} {row.password:22} {row.organization} "
                   f"[{', '.join(row.roles)}] as {row.member_role}")


@market_cli.command("settings")
def settings_command() -> None:
    """Print every setting as a Markdown table (the README's configuration section)."""
    click.echo("| variable | default | meaning |\n| --- | --- | --- |")
    for setting in SETTINGS:
        default = "" if setting.default is None else f"`{setting.default}`"
        click.echo(f"| `{setting.name}` | {default} | {setting.help} |")


def _public_key(path: str | None):
    """The public key to verify with: from a file a third party trusts, else the platform's."""
    if path is not None:
        with open(path, "rb") as handle:
            return checkpoints.load_public_key(handle.read())
    return checkpoints.signing_key_from_settings(current_app.config).public_key()


@audit_cli.command("verify")
@click.option("--checkpoints", "with_checkpoints", is_flag=True,
              help="Also check the chain and the ledger against every signed checkpoint, so "
                   "deleted last entries and a re-hashed chain show.")
@click.option("--public-key", "public_key_path", type=click.Path(exists=True, dir_okay=False),
              help="PEM file of the platform's public key (default: the configured key's).")
def audit_verify(with_checkpoints: bool, public_key_path: str | None) -> None:
    """Recompute the audit chain; name the first broken entry and exit 1 if there is one."""
    with _database().session() as session:
        checked, broken = audit.verify_chain(session)
        findings = (checkpoints.verify_checkpoints(session, _public_key(public_key_path))
                    if with_checkpoints else [])
        signed = session.scalar(select(func.count()).select_from(IntegrityCheckpoint))
    if broken is not None:
        click.echo(f"audit chain BROKEN at entry seq={broken.seq} (id={broken.entry_id}): "
                   f"{broken.reason}; {checked} entries before it are intact", err=True)
    for finding in findings:
        if broken is None or not finding.subject.startswith("audit entry seq="):
            click.echo(f"checkpoints: {finding}", err=True)
    if broken is not None or findings:
        sys.exit(1)
    click.echo(f"audit chain intact: {checked} entries verified")
    if with_checkpoints:
        click.echo(f"{signed} signed checkpoints verified against the audit chain and the "
                   "ledger")


@audit_cli.command("checkpoint")
@click.option("--reason", default="on demand", show_default=True)
def audit_checkpoint(reason: str) -> None:
    """Sign a checkpoint of the audit chain's head and the ledger's digest now."""
    key = checkpoints.signing_key_from_settings(current_app.config)
    with _database().session() as session, session.begin():
        checkpoint = checkpoints.sign_checkpoint(session, key, reason=reason)
        click.echo(f"checkpoint #{checkpoint.number} signed at "
                   f"{checkpoint.signed_at.isoformat()}: {checkpoint.payload}")


@audit_cli.command("public-key")
def audit_public_key() -> None:
    """Print the platform's public key (PEM), for whoever verifies checkpoints."""
    key = checkpoints.signing_key_from_settings(current_app.config).public_key()
    click.echo(checkpoints.public_key_pem(key), nl=False)


@audit_cli.command("export")
@click.argument("directory", type=click.Path(file_okay=False))
def audit_export(directory: str) -> None:
    """Write the audit log, the checkpoints and the public key to DIRECTORY, for
    ``tools/verify_checkpoint.py``."""
    key = checkpoints.signing_key_from_settings(current_app.config).public_key()
    with _database().session() as session:
        written = checkpoints.export_files(session, key, Path(directory))
    click.echo(f"written to {directory}: " + ", ".join(f"{name} ({count})"
                                                       for name, count in written.items()))


def register_commands(app: Flask) -> None:
    for group in (db_cli, market_cli, audit_cli, pricing_cli, finance_cli):
        app.cli.add_command(group)
    register_billing_commands(app)
