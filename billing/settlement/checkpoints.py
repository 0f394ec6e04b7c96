"""Signed checkpoints: the audit chain and the ledger, anchored outside the tables themselves.

A hash chain shows an edit only to someone who still has the old hashes: whoever can write the
table can also delete its last entries, or rewrite one and re-hash everything after it, and the
chain is whole again. So at every period close (the close-statements job) and on demand
(``flask audit checkpoint``) the marketplace signs a checkpoint with its Ed25519 key:

- the audit chain's head: entry count, last ``seq`` and its hash;
- the ledger's digest: transaction count, last id, and a running SHA-256 over every
  transaction's id and seal, in id order;
- at a close, the content hash of each statement of the period;
- the checkpoint before it (the SHA-256 of its payload), so checkpoints form a chain too.

The payload is canonical JSON, stored as the exact text that was signed, in its own table and in
every exported statement bundle. ``verify_checkpoints`` (``flask audit verify --checkpoints``)
checks each signature with the public key, then that the audit chain still reaches every
signed head with the signed hash (a truncation or a re-hashed chain does not) and that the
ledger still gives every signed digest (a deleted, inserted or re-sealed transaction does not).
``tools/verify_checkpoint.py`` does the same from the exported files and the public key alone.

Concurrency: a checkpoint holds the ledger's posting lock exclusively, so no transaction with a
lower id than the newest it covers can commit after it; audit appenders are already serialized.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from billing.settlement.ledger import LedgerTransaction, canonical_json, hold_posting_lock
from billing.models.operations import IntegrityCheckpoint
from market.core import audit
from market.core.audit import AuditEntry
from market.core.db import utcnow
from market.core.errors import InvalidInput

FORMAT = "market-checkpoint/1"
LEDGER_GENESIS = "0" * 64
MAX_REASON = 80


# Keys -------------------------------------------------------------------------------------------

def key_id(public_key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw public key, in hex: names the key a checkpoint was signed with."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key(pem: bytes | str) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput("The public key is not an Ed25519 key.", field="public_key")
    return key


def load_signing_key(path: str | os.PathLike, *, create: bool) -> Ed25519PrivateKey:
    """The platform's private key from a PEM file; with ``create`` (outside production) a new
    key is written there when there is none yet."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not create:
            raise RuntimeError(f"the platform signing key {path} does not exist") from None
        key = Ed25519PrivateKey.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created private (0600) before anything is written to it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        return key
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RuntimeError(f"the platform signing key {path} is not an Ed25519 key")
    return key


def signing_key_from_settings(settings: Mapping[str, Any]) -> Ed25519PrivateKey:
    """The key named by the PLATFORM_SIGNING_KEY setting (generated outside production)."""
    return load_signing_key(settings["PLATFORM_SIGNING_KEY"],
                            create=settings.get("MARKET_ENV") != "production")


# Digests ----------------------------------------------------------------------------------------

def ledger_step(digest: str, transaction_id: int, seal: str) -> str:
    """One step of the ledger's running digest."""
    return hashlib.sha256(f"{digest}:{transaction_id}:{seal}".encode("ascii")).hexdigest()


def _seals_in_order(session: Session, batch_size: int = 5000) -> Iterator[tuple[int, str]]:
    after = 0
    while True:
        batch = session.execute(
            select(LedgerTransaction.id, LedgerTransaction.seal)
            .where(LedgerTransaction.id > after).order_by(LedgerTransaction.id)
            .limit(batch_size)).all()
        if not batch:
            return
        yield from ((row.id, row.seal) for row in batch)
        after = batch[-1].id


def payload_digest(payload: str) -> str:
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# Signing ----------------------------------------------------------------------------------------

def sign_checkpoint(session: Session, signing_key: Ed25519PrivateKey, *, reason: str,
                    statements: Mapping[str, str] | None = None) -> IntegrityCheckpoint:
    """Sign the audit chain's head and the ledger's digest as they stand, in the caller's
    transaction. ``statements``: number → content hash of the statements it vouches for."""
    reason = (reason or "").strip()
    if not reason or len(reason) > MAX_REASON:
        raise InvalidInput(f"A checkpoint needs a reason of 1 to {MAX_REASON} characters.",
                           field="reason")
    hold_posting_lock(session, exclusive=True)
    head = session.execute(select(AuditEntry.seq, AuditEntry.hash)
                           .order_by(AuditEntry.seq.desc()).limit(1)).first()
    entries = session.scalar(select(func.count()).select_from(AuditEntry))
    digest, count, last_id = LEDGER_GENESIS, 0, 0
    for transaction_id, seal in _seals_in_order(session):
        digest, count, last_id = ledger_step(digest, transaction_id, seal), count + 1, \
            transaction_id
    previous = session.scalar(select(IntegrityCheckpoint)
                              .order_by(IntegrityCheckpoint.number.desc()).limit(1))
    signed_at = utcnow()
    public = signing_key.public_key()
    body = {
        "format": FORMAT,
        "number": previous.number + 1 if previous else 1,
        "signed_at": signed_at.isoformat(),
        "reason": reason,
        "key_id": key_id(public),
        "previous": payload_digest(previous.payload) if previous else None,
        "audit": {"entries": entries, "head_seq": head.seq if head else 0,
                  "head_hash": head.hash if head else audit.GENESIS_HASH},
        "ledger": {"transactions": count, "last_id": last_id, "digest": digest},
        "statements": dict(sorted((statements or {}).items())),
    }
    payload = canonical_json(body)
    checkpoint = IntegrityCheckpoint(
        number=body["number"], signed_at=signed_at, reason=reason, key_id=body["key_id"],
        payload=payload, signature=signing_key.sign(payload.encode("utf-8")).hex())
    session.add(checkpoint)
    session.flush()  # a unique number: two checkpoints racing past the lock cannot both land
    return checkpoint


def exported(checkpoint: IntegrityCheckpoint) -> dict[str, str]:
    """A checkpoint as a file holds it: the signed text and its signature."""
    return {"payload": checkpoint.payload, "signature": checkpoint.signature}


def latest_covering(session: Session, statement_number: str) -> IntegrityCheckpoint | None:
    """The newest checkpoint, if any signs this statement's hash (else the newest overall)."""
    found = None
    for checkpoint in session.scalars(select(IntegrityCheckpoint)
                                      .order_by(IntegrityCheckpoint.number.desc())):
        if statement_number in json.loads(checkpoint.payload).get("statements", {}):
            return checkpoint
        found = found or checkpoint
    return found


def export_files(session: Session, public_key: Ed25519PublicKey, directory: Path
                 ) -> dict[str, int]:
    """Write what ``tools/verify_checkpoint.py`` reads: ``audit.jsonl`` (each entry's canonical
    text, previous hash and hash, in order), ``checkpoints.jsonl`` (each signed payload and its
    signature) and ``platform-key.pem``."""
    directory.mkdir(parents=True, exist_ok=True)
    entries = 0
    with open(directory / "audit.jsonl", "w", encoding="utf-8") as out:
        for entry in audit.entries_in_order(session):
            out.write(canonical_json({"seq": entry.seq, "canonical": entry.canonical(),
                                      "prev_hash": entry.prev_hash, "hash": entry.hash}) + "\n")
            entries += 1
    signed = 0
    with open(directory / "checkpoints.jsonl", "w", encoding="utf-8") as out:
        for checkpoint in session.scalars(select(IntegrityCheckpoint)
                                          .order_by(IntegrityCheckpoint.number)):
            out.write(canonical_json(exported(checkpoint)) + "\n")
            signed += 1
    (directory / "platform-key.pem").write_text(public_key_pem(public_key))
    return {"audit.jsonl": entries, "checkpoints.jsonl": signed, "platform-key.pem": 1}


# Verifying --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    """One thing a verifier found wrong; ``subject`` names what broke."""

    subject: str
    problem: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.problem}"


def check_signature(public_key: Ed25519PublicKey, payload: str, signature_hex: str) -> bool:
    try:
        public_key.verify(bytes.fromhex(signature_hex), payload.encode("utf-8"))
    except (InvalidSignature, ValueError):
        return False
    return True


def signed_bodies(checkpoints: Iterable[tuple[str, str, str]], public_key: Ed25519PublicKey
                  ) -> tuple[list[dict[str, Any]], list[Finding]]:
    """The bodies of checkpoints (label, payload, signature) whose signatures verify and that
    link to the one before; a finding for each that does not."""
    bodies, findings, previous = [], [], None
    for label, payload, signature in checkpoints:
        if not check_signature(public_key, payload, signature):
            findings.append(Finding(label, "its signature does not verify under the platform's "
                                           "public key (the checkpoint was forged or altered)"))
            previous = None
            continue
        body = json.loads(payload)
        if previous is not None and body.get("previous") != payload_digest(previous):
            findings.append(Finding(label, "it does not follow the checkpoint before it "
                                           "(a checkpoint between them was removed)"))
        bodies.append(body)
        previous = payload
    return bodies, findings


def verify_checkpoints(session: Session, public_key: Ed25519PublicKey) -> list[Finding]:
    """Check every stored checkpoint's signature, then the audit chain and the ledger against
    every signed head and digest; empty when nothing was truncated, rewritten or re-sealed."""
    rows = session.scalars(select(IntegrityCheckpoint)
                           .order_by(IntegrityCheckpoint.number)).all()
    bodies, findings = signed_bodies(
        ((f"checkpoint #{row.number}", row.payload, row.signature) for row in rows), public_key)
    for row, expected in zip(rows, range(1, len(rows) + 1)):
        if row.number != expected:
            findings.append(Finding(f"checkpoint #{row.number}",
                                    f"checkpoint #{expected} is missing before it"))
            break
    findings += _audit_against(session, bodies)
    findings += _ledger_against(session, bodies)
    return findings


def _audit_against(session: Session, bodies: list[dict[str, Any]]) -> list[Finding]:
    checked, broken = audit.verify_chain(session)
    findings = []
    if broken is not None:
        findings.append(Finding(f"audit entry seq={broken.seq} (id={broken.entry_id})",
                                broken.reason))
    last = session.scalar(select(func.max(AuditEntry.seq))) or 0
    matched = 0
    for body in sorted(bodies, key=lambda b: b["audit"]["head_seq"]):
        signed = body["audit"]
        label = f"checkpoint #{body['number']} ({body['signed_at']})"
        if signed["head_seq"] == 0:
            continue
        if signed["head_seq"] > last:
            findings.append(Finding(
                f"audit entries seq={last + 1}..{signed['head_seq']}",
                f"deleted: {label} signed a chain of {signed['entries']} entries ending at "
                f"seq={signed['head_seq']}, the log now ends at seq={last}"))
            break
        stored = session.scalar(select(AuditEntry.hash).where(AuditEntry.seq == signed["head_seq"]))
        if stored != signed["head_hash"]:
            findings.append(Finding(
                f"audit entries seq={matched + 1}..{signed['head_seq']}",
                f"rewritten: entry seq={signed['head_seq']} no longer has the hash {label} "
                f"signed, so an entry in this range was changed and the chain re-hashed"))
            break
        matched = signed["head_seq"]
    return findings


def _ledger_against(session: Session, bodies: list[dict[str, Any]]) -> list[Finding]:
    pending = sorted((b for b in bodies if b["ledger"]["transactions"] > 0),
                     key=lambda b: b["ledger"]["last_id"])
    digest, count, matched = LEDGER_GENESIS, 0, 0

    def compare(body: dict[str, Any]) -> Finding | None:
        signed = body["ledger"]
        if (count, digest) == (signed["transactions"], signed["digest"]):
            return None
        difference = count - signed["transactions"]
        what = (f"{-difference} fewer transactions than" if difference < 0 else
                f"{difference} more transactions than" if difference > 0 else
                "as many transactions as")
        return Finding(
            f"ledger transactions id {matched + 1}..{signed['last_id']}",
            f"do not match checkpoint #{body['number']} ({body['signed_at']}): {what} it "
            "signed, and another digest (a transaction was deleted, inserted or re-sealed "
            "after it was posted)")

    for transaction_id, seal in _seals_in_order(session):
        if not pending:
            break
        while pending and transaction_id > pending[0]["ledger"]["last_id"]:
            finding = compare(pending[0])
            if finding is not None:
                return [finding]
            matched = pending.pop(0)["ledger"]["last_id"]
        digest, count = ledger_step(digest, transaction_id, seal), count + 1
    for body in pending:
        finding = compare(body)
        if finding is not None:
            return [finding]
        matched = body["ledger"]["last_id"]
    return []
