#!/usr/bin/env python3
"""Verify the marketplace's signed checkpoints without the marketplace: needs only Python 3.10+
and the ``cryptography`` package.

    python tools/verify_checkpoint.py --public-key platform-key.pem checkpoint.json
    python tools/verify_checkpoint.py --public-key platform-key.pem checkpoints.jsonl \\
        --audit audit.jsonl

A checkpoint file (``checkpoint.json`` in a statement bundle, or each line of
``checkpoints.jsonl`` from ``flask audit export``) is ``{"payload": "...", "signature": "..."}``:
``payload`` is the exact text the platform signed with its Ed25519 key, ``signature`` the
signature in hex. Obtain the public key from the platform through a channel you trust (the
copy in a bundle only tells you which key it claims; compare its fingerprint, the ``key_id``,
SHA-256 of the raw 32-byte key).

Checks, each failure printed with what broke, exit status 1 on any:

1. every signature verifies under the public key, and consecutive checkpoints link
   (``previous`` is the SHA-256 of the payload before);
2. with ``--audit`` (``audit.jsonl``: each line the entry's ``seq``, its ``canonical`` text, its
   ``prev_hash`` and ``hash``): the chain recomputes (hash = SHA-256 of prev_hash followed by
   the canonical text, starting from 64 zeros), and reaches every checkpoint's ``head_seq``
   with its ``head_hash`` - so entries deleted from the end, or an entry rewritten and the
   chain re-hashed after it, show;
3. with ``--statement statement.json`` (from a bundle): the statement's content hashes to the
   hash it states, and that is the hash a checkpoint signed at its close.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = "0" * 64


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)


def read_checkpoints(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        text = handle.read().strip()
    if text.startswith("["):
        return json.loads(text)
    try:
        return [json.loads(text)]  # one checkpoint (checkpoint.json)
    except json.JSONDecodeError:
        pass  # one per line (checkpoints.jsonl)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def verify(public_key: Ed25519PublicKey, checkpoints: list[dict], audit_lines: list[dict] | None,
           statement: dict | None) -> list[str]:
    failures: list[str] = []
    bodies, previous = [], None
    for index, item in enumerate(checkpoints, 1):
        payload = item["payload"]
        try:
            public_key.verify(bytes.fromhex(item["signature"]), payload.encode("utf-8"))
        except (InvalidSignature, ValueError):
            failures.append(f"checkpoint {index} of the file: the signature does not verify "
                            "(forged or altered)")
            previous = None
            continue
        body = json.loads(payload)
        if previous is not None and \
                body.get("previous") != hashlib.sha256(previous.encode("utf-8")).hexdigest():
            failures.append(f"checkpoint #{body['number']}: does not follow the one before it")
        bodies.append(body)
        previous = payload
    if audit_lines is not None:
        failures += _audit(bodies, audit_lines)
    if statement is not None:
        failures += _statement(bodies, statement)
    return failures


def _audit(bodies: list[dict], lines: list[dict]) -> list[str]:
    hashes: dict[int, str] = {}
    expected_prev, expected_seq = GENESIS, 1
    for line in lines:
        seq = line["seq"]
        if seq != expected_seq or json.loads(line["canonical"]).get("seq") != seq:
            return [f"audit entry seq={seq}: sequence gap, expected seq={expected_seq}"]
        if line["prev_hash"] != expected_prev:
            return [f"audit entry seq={seq}: its previous hash is not the entry before it"]
        digest = hashlib.sha256(expected_prev.encode("ascii")
                                + line["canonical"].encode("utf-8")).hexdigest()
        if digest != line["hash"]:
            return [f"audit entry seq={seq}: its content does not match its hash"]
        hashes[seq] = digest
        expected_prev, expected_seq = digest, seq + 1
    last = expected_seq - 1
    for body in sorted(bodies, key=lambda b: b["audit"]["head_seq"]):
        head = body["audit"]
        if head["head_seq"] == 0:
            continue
        if head["head_seq"] > last:
            return [f"audit entries seq={last + 1}..{head['head_seq']}: deleted (checkpoint "
                    f"#{body['number']} signed a chain ending at seq={head['head_seq']})"]
        if hashes[head["head_seq"]] != head["head_hash"]:
            return [f"audit entry seq={head['head_seq']}: not the hash checkpoint "
                    f"#{body['number']} signed (the chain was rewritten and re-hashed)"]
    return []


def _statement(bodies: list[dict], statement: dict) -> list[str]:
    content, number = statement["content"], statement["content"]["number"]
    digest = hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()
    if digest != statement["content_hash"]:
        return [f"statement {number}: its content does not hash to its stated hash"]
    signed = [b for b in bodies if number in b.get("statements", {})]
    if not signed:
        return [f"statement {number}: no checkpoint in the file signs it"]
    if signed[-1]["statements"][number] != digest:
        return [f"statement {number}: not the hash checkpoint #{signed[-1]['number']} signed"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", help="checkpoint.json or checkpoints.jsonl")
    parser.add_argument("--public-key", required=True, help="the platform's public key (PEM)")
    parser.add_argument("--audit", help="audit.jsonl from `flask audit export`")
    parser.add_argument("--statement", help="statement.json from a statement bundle")
    args = parser.parse_args(argv)
    with open(args.public_key, "rb") as handle:
        public_key = serialization.load_pem_public_key(handle.read())
    if not isinstance(public_key, Ed25519PublicKey):
        print("the public key is not an Ed25519 key", file=sys.stderr)
        return 2
    audit_lines = None
    if args.audit:
        with open(args.audit, encoding="utf-8") as handle:
            audit_lines = [json.loads(line) for line in handle if line.strip()]
    statement = None
    if args.statement:
        with open(args.statement, encoding="utf-8") as handle:
            statement = json.load(handle)
    checkpoints = read_checkpoints(args.checkpoints)
    failures = verify(public_key, checkpoints, audit_lines, statement)
    for failure in failures:
        print(failure, file=sys.stderr)
    if failures:
        return 1
    newest = json.loads(checkpoints[-1]["payload"]) if checkpoints else None
    print(f"{len(checkpoints)} checkpoints verified"
          + (f"; newest #{newest['number']} signed {newest['signed_at']}, audit head "
             f"seq={newest['audit']['head_seq']}" if newest else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
