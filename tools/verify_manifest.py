#!/usr/bin/env python3
"""Verify one downloaded file of a dataset version without the marketplace and without the
rest of the version: needs only Python 3.10+ and its standard library.

    python tools/verify_manifest.py --root CONTENT_SHA256 proof.json downloaded-file

``CONTENT_SHA256`` is the version's content SHA-256 as a source you trust shows it (the
listing, or the transaction certificate of your purchase): for a version made of files, the
root of a Merkle tree over its manifest. ``proof.json`` is what the marketplace serves beside
the file::

    {"format": "market-manifest-proof/1",
     "entry": {"path": "images/0001.png", "media_type": "image/png", "size": 48213,
               "sha256": "<64 hex digits>", "tokens": 255, "token_profile": "<profile name>"},
     "leaf_index": 0, "tree_size": 5, "audit_path": ["<64 hex digits>", ...]}

Checks, each failure printed with what broke; exit status 0 when both hold, 1 when either
fails, 2 when an input cannot be read:

1. the file is the entry's: its size and its SHA-256 are the entry's ``size`` and ``sha256``;
2. the entry is the version's: its leaf, hashed up the audit path, gives the root.

The leaf is the entry's fields in this order, each of a fixed width or preceded by its
length (U32, U64: unsigned big-endian integers of 4 and 8 bytes)::

    leaf = STR(path) || STR(media_type) || U64(size) || sha256 (32 raw bytes)
           || U64(tokens) || STR(token_profile)
    STR(s) = U32(length of s in UTF-8 bytes) || s in UTF-8

The tree is RFC 6962's (section 2.1) with SHA-256 over the leaves in the manifest's order
(by the UTF-8 bytes of their paths): a leaf hashes as SHA-256(0x00 || leaf), an interior node
as SHA-256(0x01 || left || right), and a list of n > 1 leaves splits at the largest power of
two smaller than n. ``audit_path`` holds the sibling hashes from the leaf up to the root; it
is checked as RFC 9162, section 2.1.3.2, prescribes, so a proof of the wrong length, order,
index or tree size fails. A proof that holds shows the entry is a file of the version with that
root; the index and size only shape the path (the number of files is the whole manifest's).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import struct
import sys

PROOF_FORMAT = "market-manifest-proof/1"
HEX64 = re.compile(r"[0-9a-f]{64}")
TEXT_FIELDS = ("path", "media_type", "token_profile")
COUNT_FIELDS = ("size", "tokens")
CHUNK = 1 << 20


class Unreadable(Exception):
    """An input that is not what this tool reads (exit status 2)."""


def leaf(entry: dict) -> bytes:
    def text(value: str) -> bytes:
        encoded = value.encode("utf-8")
        return struct.pack(">I", len(encoded)) + encoded

    return b"".join((text(entry["path"]), text(entry["media_type"]),
                     struct.pack(">Q", entry["size"]), bytes.fromhex(entry["sha256"]),
                     struct.pack(">Q", entry["tokens"]), text(entry["token_profile"])))


def root_from_path(entry: dict, leaf_index: int, tree_size: int,
                   audit_path: list[str]) -> bytes | None:
    """The root the audit path leads to from the entry's leaf, or None when the path cannot
    be one for that index in a tree of that size (RFC 9162, section 2.1.3.2)."""
    if not 0 <= leaf_index < tree_size:
        return None
    index, last = leaf_index, tree_size - 1
    digest = hashlib.sha256(b"\x00" + leaf(entry)).digest()
    for sibling in (bytes.fromhex(h) for h in audit_path):
        if last == 0:
            return None
        if index & 1 or index == last:
            digest = hashlib.sha256(b"\x01" + sibling + digest).digest()
            while not index & 1 and index != 0:
                index, last = index >> 1, last >> 1
        else:
            digest = hashlib.sha256(b"\x01" + digest + sibling).digest()
        index, last = index >> 1, last >> 1
    return digest if last == 0 else None


def read_proof(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            proof = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise Unreadable(f"{path}: not a readable JSON proof ({error})") from error
    if not isinstance(proof, dict) or proof.get("format") != PROOF_FORMAT:
        raise Unreadable(f"{path}: not a proof of format {PROOF_FORMAT}")
    entry = proof.get("entry")
    if not isinstance(entry, dict):
        raise Unreadable(f"{path}: the proof has no entry")
    for name in TEXT_FIELDS:
        if not isinstance(entry.get(name), str):
            raise Unreadable(f"{path}: the entry's {name} is not text")
    for name in COUNT_FIELDS:
        value = entry.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
            raise Unreadable(f"{path}: the entry's {name} is not a whole number of 64 bits")
    if not isinstance(entry.get("sha256"), str) or not HEX64.fullmatch(entry["sha256"]):
        raise Unreadable(f"{path}: the entry's sha256 is not 64 lowercase hex digits")
    for name in ("leaf_index", "tree_size"):
        value = proof.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise Unreadable(f"{path}: {name} is not a whole number")
    audit_path = proof.get("audit_path")
    if not isinstance(audit_path, list) or not all(
            isinstance(h, str) and HEX64.fullmatch(h) for h in audit_path):
        raise Unreadable(f"{path}: audit_path is not a list of 64-hex-digit hashes")
    return proof


def file_digest(path: str) -> str:
    """The file's SHA-256, read in chunks so a file of any size fits in memory."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    except OSError as error:
        raise Unreadable(f"{path}: cannot be read ({error})") from error
    return digest.hexdigest()


def verify(root: str, proof: dict, file_path: str) -> list[str]:
    entry = proof["entry"]
    failures = []
    try:
        on_disk = os.stat(file_path).st_size
    except OSError as error:
        raise Unreadable(f"{file_path}: cannot be read ({error})") from error
    if on_disk != entry["size"]:
        failures.append(f"{file_path}: {on_disk} bytes, but the entry for {entry['path']!r} "
                        f"says {entry['size']}: not the file the manifest lists")
    else:
        digest = file_digest(file_path)
        if digest != entry["sha256"]:
            failures.append(f"{file_path}: its SHA-256 is {digest}, but the entry for "
                            f"{entry['path']!r} says {entry['sha256']}: the file was altered "
                            "or is another file")
    reached = root_from_path(entry, proof["leaf_index"], proof["tree_size"], proof["audit_path"])
    if reached is None:
        failures.append(f"the proof for {entry['path']!r} does not fit leaf "
                        f"{proof['leaf_index']} of a tree of {proof['tree_size']} leaves")
    elif reached.hex() != root:
        failures.append(f"the entry for {entry['path']!r} with its proof leads to the root "
                        f"{reached.hex()}, not {root}: the entry or the proof was altered, or "
                        "they belong to another version")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True,
                        help="the version's content SHA-256 (64 hex digits), from a source "
                             "you trust")
    parser.add_argument("proof", help="the file's proof (proof.json)")
    parser.add_argument("file", help="the downloaded file")
    args = parser.parse_args(argv)
    root = args.root.strip().lower()
    try:
        if not HEX64.fullmatch(root):
            raise Unreadable(f"--root {args.root!r}: not 64 hexadecimal digits")
        proof = read_proof(args.proof)
        failures = verify(root, proof, args.file)
    except Unreadable as error:
        print(error, file=sys.stderr)
        return 2
    for failure in failures:
        print(failure, file=sys.stderr)
    if failures:
        return 1
    entry = proof["entry"]
    print(f"verified: {args.file} is {entry['path']!r} ({entry['size']} bytes, SHA-256 "
          f"{entry['sha256']}) of the version whose content SHA-256 is {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
