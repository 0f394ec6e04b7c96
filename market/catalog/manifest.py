"""A version's manifest: its files, and the Merkle root a buyer checks any one file against.

A manifest is a list of entries, one per file: its ``path`` inside the version, its
``media_type``, its ``size`` in bytes, the ``sha256`` of its bytes, the ``tokens`` it counts
for and the ``token_profile`` that counted them. The version's ``content_sha256`` is the root
of a Merkle tree over the entries, so a buyer holding that root (it is on the listing and on
every transaction certificate) can check one downloaded file with its entry and a short proof,
without the rest of the version. ``tools/verify_manifest.py`` does that check with nothing but
the Python standard library; the format below is the one it implements.

**Paths.** A path is relative, in Unicode NFC, with ``/`` between segments. ``.`` segments
are dropped; empty segments (``a//b``, a trailing ``/``), ``..``, a leading ``/``, a
backslash, a drive (``C:``), control characters and lone surrogates are refused, as is a path
of more than ``MAX_PATH_BYTES`` or a segment of more than ``MAX_SEGMENT_BYTES`` in UTF-8. No
two entries of a manifest have the same path, nor paths that differ only in case: unpacked on
a buyer's case-insensitive disk, one file would overwrite the other.

**Order.** Entries are sorted by the UTF-8 bytes of their paths (the same as by code points).

**Leaf.** An entry's leaf is its fields in a fixed order, each of a fixed width or preceded by
its length, so no two entries share an encoding::

    leaf = STR(path) || STR(media_type) || U64(size) || sha256 (32 raw bytes)
           || U64(tokens) || STR(token_profile)
    STR(s) = U32(length of s in UTF-8 bytes) || s in UTF-8
    U32, U64 = unsigned big-endian integers of 4 and 8 bytes

**Tree** (RFC 6962, section 2.1, with SHA-256). Over the leaves ``D[0:n]`` in manifest order::

    MTH([d])    = SHA-256(0x00 || d)
    MTH(D[0:n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])), k the largest power of 2 < n

The distinct prefixes of leaves (0x00) and interior nodes (0x01) make a leaf unable to pass
as a node or a node as a leaf. The root is written as 64 lowercase hexadecimal digits.

**Proof.** An entry's inclusion proof is RFC 6962's audit path (section 2.1.1): the hashes of
the sibling subtrees from the leaf up to the root, with the leaf's index and the tree's size;
it is verified as RFC 9162, section 2.1.3.2, prescribes. What a proof shows is that the entry
is a leaf of the tree with that root; its index and size only shape the path (the root does not
carry the number of files: the whole manifest does). ``proof_document`` is the JSON a buyer
receives with a file.
"""

from __future__ import annotations

import hashlib
import re
import struct
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from market.core.errors import InvalidInput, NotFound
from market.core.inputs import INT64_MAX

PROOF_FORMAT = "market-manifest-proof/1"
MAX_PATH_BYTES = 1024
MAX_SEGMENT_BYTES = 255
# RFC 6838, section 4.2: type and subtype names; parameters are not part of an entry.
_MEDIA_NAME = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"
MEDIA_TYPE = re.compile(rf"{_MEDIA_NAME}/{_MEDIA_NAME}")
TOKEN_PROFILE = re.compile(r"[a-z0-9][a-z0-9._:/-]{0,63}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_DRIVE = re.compile(r"[A-Za-z]:")
LEAF_PREFIX, NODE_PREFIX = b"\x00", b"\x01"
FIELDS = ("path", "media_type", "size", "sha256", "tokens", "token_profile")


@dataclass(frozen=True)
class ManifestEntry:
    """One file of a version, as ``parse_entry`` makes it (its fields in their manifest form)."""

    path: str
    media_type: str
    size: int
    sha256: str
    tokens: int
    token_profile: str

    def as_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}


@dataclass(frozen=True)
class InclusionProof:
    """Where an entry sits in a tree of ``tree_size`` leaves, and the sibling hashes (hex) from
    its leaf up to the root."""

    leaf_index: int
    tree_size: int
    audit_path: tuple[str, ...]


def normalize_path(value: Any, field: str = "path") -> str:
    """The manifest form of a file's path (NFC, ``.`` segments dropped), or InvalidInput naming
    ``field`` when it could point outside the version or be read two ways."""
    if not isinstance(value, str):
        raise InvalidInput("A path is text.", field=field)
    # NFC composes at most four code points into one (U+1FAF's canonical decomposition is the
    # longest), so a longer text cannot be a path: refused before any per-character work.
    if len(value) > 4 * MAX_PATH_BYTES:
        raise InvalidInput(f"A path is at most {MAX_PATH_BYTES} bytes in UTF-8.", field=field)
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise InvalidInput("A path may not contain control characters or lone surrogates.",
                           field=field)
    path = unicodedata.normalize("NFC", value)
    if "\\" in path:
        raise InvalidInput("A path separates its parts with '/', never '\\'.", field=field)
    if path.startswith("/") or _DRIVE.match(path):
        raise InvalidInput("A path is relative to the version: no leading '/' or drive.",
                           field=field)
    segments = [segment for segment in path.split("/") if segment != "."]
    if not segments:
        raise InvalidInput("A path names a file.", field=field)
    for segment in segments:
        if segment == "":
            raise InvalidInput("A path has no empty parts ('//' or a trailing '/').",
                               field=field)
        if segment == "..":
            raise InvalidInput("A path may not contain '..'.", field=field)
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidInput(f"Each part of a path is at most {MAX_SEGMENT_BYTES} bytes "
                               "in UTF-8.", field=field)
    path = "/".join(segments)
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        raise InvalidInput(f"A path is at most {MAX_PATH_BYTES} bytes in UTF-8.", field=field)
    return path


def parse_entry(value: Any, field: str = "entry") -> ManifestEntry:
    """One manifest entry from its JSON form, normalized (path in manifest form, media type and
    digest in lowercase), or InvalidInput naming the member at fault (``entry.size``)."""
    if not isinstance(value, Mapping):
        raise InvalidInput("A manifest entry is an object.", field=field)
    unknown = sorted(set(value) - set(FIELDS))
    if unknown:
        raise InvalidInput(f"A manifest entry has no member {unknown[0]!r}.",
                           field=f"{field}.{unknown[0]}")
    for name in FIELDS:
        if name not in value:
            raise InvalidInput("This member of a manifest entry is required.",
                               field=f"{field}.{name}")
    return ManifestEntry(
        path=normalize_path(value["path"], f"{field}.path"),
        media_type=_matching(value["media_type"], MEDIA_TYPE, f"{field}.media_type",
                             "A media type is type/subtype (RFC 6838), without parameters."),
        size=_count(value["size"], f"{field}.size"),
        sha256=_matching(value["sha256"], SHA256_HEX, f"{field}.sha256",
                         "A SHA-256 digest is 64 hexadecimal digits."),
        tokens=_count(value["tokens"], f"{field}.tokens"),
        token_profile=_matching(value["token_profile"], TOKEN_PROFILE, f"{field}.token_profile",
                                "A token profile is a name of at most 64 letters, digits and "
                                "'._:/-'.", lowercase=False),
    )


def manifest(values: Iterable[Any], field: str = "entries") -> tuple[ManifestEntry, ...]:
    """A version's manifest from the JSON form of its entries: each entry parsed, the entries
    sorted by path, and at least one file, none twice (nor twice up to case)."""
    entries = [parse_entry(value, f"{field}.{index}") for index, value in enumerate(values)]
    if not entries:
        raise InvalidInput("A manifest lists at least one file.", field=field)
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        folded = entry.path.casefold()
        if folded in seen:
            raise InvalidInput(f"{entry.path!r} is listed twice (entry {seen[folded]} has the "
                               "same path, or one that differs only in case).",
                               field=f"{field}.{index}.path")
        seen[folded] = index
    return tuple(sorted(entries, key=_order))


def leaf_bytes(entry: ManifestEntry) -> bytes:
    """The entry's leaf in the manifest's encoding (the module docstring)."""
    return b"".join((
        _text(entry.path), _text(entry.media_type), struct.pack(">Q", entry.size),
        bytes.fromhex(entry.sha256), struct.pack(">Q", entry.tokens), _text(entry.token_profile),
    ))


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def merkle_root(entries: Iterable[ManifestEntry]) -> str:
    """The Merkle tree hash of a manifest (hex): a manifest version's ``content_sha256``."""
    return _tree_hash(_leaves(entries)[1]).hex()


def inclusion_proof(entries: Iterable[ManifestEntry], path: str) -> InclusionProof:
    """The audit path of the entry at ``path`` (in any form ``normalize_path`` takes)."""
    ordered, leaves = _leaves(entries)
    wanted = normalize_path(path)
    for index, entry in enumerate(ordered):
        if entry.path == wanted:
            return InclusionProof(index, len(leaves),
                                  tuple(h.hex() for h in _audit_path(index, leaves)))
    raise NotFound(f"The manifest lists no file {wanted!r}.", field="path")


def verify_inclusion(root: str, entry: ManifestEntry, proof: InclusionProof) -> bool:
    """Whether ``proof`` shows ``entry`` in the tree whose root is ``root`` (RFC 9162, section
    2.1.3.2): a proof of the wrong length, order or index fails, and so does a size whose tree
    would put the leaf elsewhere."""
    if not 0 <= proof.leaf_index < proof.tree_size:
        return False
    try:
        path = [bytes.fromhex(h) for h in proof.audit_path]
        expected = bytes.fromhex(root)
    except ValueError:
        return False
    if any(len(h) != hashlib.sha256().digest_size for h in path):
        return False
    index, last = proof.leaf_index, proof.tree_size - 1
    digest = leaf_hash(leaf_bytes(entry))
    for sibling in path:
        if last == 0:
            return False
        if index & 1 or index == last:
            digest = node_hash(sibling, digest)
            while not index & 1 and index != 0:
                index, last = index >> 1, last >> 1
        else:
            digest = node_hash(digest, sibling)
        index, last = index >> 1, last >> 1
    return last == 0 and digest == expected


def proof_document(entry: ManifestEntry, proof: InclusionProof) -> dict[str, Any]:
    """What a buyer receives beside a file, for ``tools/verify_manifest.py``."""
    return {"format": PROOF_FORMAT, "entry": entry.as_json(), "leaf_index": proof.leaf_index,
            "tree_size": proof.tree_size, "audit_path": list(proof.audit_path)}


def _tree_hash(leaves: Sequence[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(_tree_hash(leaves[:k]), _tree_hash(leaves[k:]))


def _audit_path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 6962's PATH(m, D[n]): the siblings from the leaf up."""
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return _audit_path(index, leaves[:k]) + [_tree_hash(leaves[k:])]
    return _audit_path(index - k, leaves[k:]) + [_tree_hash(leaves[:k])]


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _leaves(entries: Iterable[ManifestEntry]) -> tuple[list[ManifestEntry], list[bytes]]:
    """The entries in manifest order and their leaf hashes; an empty list, or one with a path
    twice, is refused rather than given a root no manifest has."""
    ordered = sorted(entries, key=_order)
    if not ordered:
        raise InvalidInput("A manifest lists at least one file.", field="entries")
    for before, after in zip(ordered, ordered[1:]):
        if before.path == after.path:
            raise InvalidInput(f"{after.path!r} is listed twice.", field="entries")
    return ordered, [leaf_hash(leaf_bytes(entry)) for entry in ordered]


def _order(entry: ManifestEntry) -> bytes:
    return entry.path.encode("utf-8")


def _text(value: str) -> bytes:
    encoded = value.encode("utf-8")
    return struct.pack(">I", len(encoded)) + encoded


def _count(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= INT64_MAX:
        raise InvalidInput(f"A whole number from 0 to {INT64_MAX}.", field=field)
    return value


def _matching(value: Any, pattern: re.Pattern, field: str, message: str,
              lowercase: bool = True) -> str:
    if not isinstance(value, str):
        raise InvalidInput(message, field=field)
    if lowercase:
        value = value.lower()
    if not pattern.fullmatch(value):
        raise InvalidInput(message, field=field)
    return value
