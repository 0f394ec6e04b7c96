"""The manifest's Merkle tree against RFC 6962 computed here from its definition, proofs for
every leaf, and the paths and fields a manifest refuses.

The tree below (``rfc6962_root``, ``rfc6962_path``) and the leaf encoding (``encode``) are
written again from the specification, not taken from the module, and the tree is first checked
against the reference roots of Certificate Transparency's own Merkle tree tests.
"""

from __future__ import annotations

import hashlib
import struct
import unicodedata
from dataclasses import replace

import pytest

from market.catalog.manifest import (
    InclusionProof, ManifestEntry, inclusion_proof, leaf_bytes, leaf_hash, manifest, merkle_root,
    node_hash, normalize_path, parse_entry, proof_document, verify_inclusion,
)
from market.core.errors import InvalidInput, NotFound


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def largest_power_of_two_below(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def rfc6962_root(leaves: list[bytes]) -> bytes:
    """MTH(D[n]), RFC 6962 section 2.1."""
    if len(leaves) == 1:
        return sha256(b"\x00" + leaves[0])
    k = largest_power_of_two_below(len(leaves))
    return sha256(b"\x01" + rfc6962_root(leaves[:k]) + rfc6962_root(leaves[k:]))


def rfc6962_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]), RFC 6962 section 2.1.1."""
    if len(leaves) == 1:
        return []
    k = largest_power_of_two_below(len(leaves))
    if m < k:
        return rfc6962_path(m, leaves[:k]) + [rfc6962_root(leaves[k:])]
    return rfc6962_path(m - k, leaves[k:]) + [rfc6962_root(leaves[:k])]


def encode(entry: dict) -> bytes:
    """The leaf as the module docstring specifies it."""
    def text(value: str) -> bytes:
        return len(value.encode()).to_bytes(4, "big") + value.encode()

    return (text(entry["path"]) + text(entry["media_type"]) + entry["size"].to_bytes(8, "big")
            + bytes.fromhex(entry["sha256"]) + entry["tokens"].to_bytes(8, "big")
            + text(entry["token_profile"]))


# Certificate Transparency's reference inputs and the roots of their first 1..8 leaves.
CT_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
             "606162636465666768696a6b6c6d6e6f"]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def entry_json(index: int, **changes) -> dict:
    content = f"file {index}".encode()
    value = {"path": f"data/{index:03d}.bin", "media_type": "application/octet-stream",
             "size": len(content), "sha256": hashlib.sha256(content).hexdigest(),
             "tokens": 10 + index, "token_profile": "bytes/1"}
    return value | changes


def entries_of(n: int) -> tuple[ManifestEntry, ...]:
    return manifest(entry_json(index) for index in range(n))


@pytest.mark.parametrize("n", range(1, 9))
def test_the_tree_written_here_gives_certificate_transparencys_reference_roots(n):
    assert rfc6962_root([bytes.fromhex(h) for h in CT_LEAVES[:n]]).hex() == CT_ROOTS[n - 1]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_the_root_is_rfc6962_over_the_entries_encoded_as_specified(n):
    values = [entry_json(index) for index in range(n)]
    assert merkle_root(manifest(values)) == rfc6962_root([encode(v) for v in values]).hex()


def test_the_root_of_three_leaves_by_hand():
    a, b, c = (sha256(b"\x00" + encode(entry_json(i))) for i in range(3))
    expected = sha256(b"\x01" + sha256(b"\x01" + a + b) + c)
    assert merkle_root(entries_of(3)) == expected.hex()


def test_the_leaf_encoding_is_fixed_byte_for_byte():
    entry = parse_entry({"path": "图像/a.png", "media_type": "image/png", "size": 258,
                         "sha256": "ab" * 32, "tokens": 765, "token_profile": "p"})
    path = "图像/a.png".encode()
    assert leaf_bytes(entry) == (
        struct.pack(">I", len(path)) + path + b"\x00\x00\x00\x09image/png"
        + b"\x00\x00\x00\x00\x00\x00\x01\x02" + b"\xab" * 32
        + b"\x00\x00\x00\x00\x00\x00\x02\xfd" + b"\x00\x00\x00\x01p")


def test_a_manifests_root_never_changes():
    # Stored versions carry this root as their content SHA-256: the format may never drift.
    assert merkle_root(entries_of(3)) == \
        "7ed3474323243ac2e13e5e0c6d84da586ec53cab600746acfcedfd045b87e6ab"


def test_the_root_does_not_depend_on_the_order_entries_are_given_in():
    values = [entry_json(index) for index in range(5)]
    assert merkle_root(manifest(reversed(values))) == merkle_root(manifest(values))
    assert [e.path for e in manifest(reversed(values))] == sorted(v["path"] for v in values)


@pytest.mark.parametrize("n", range(1, 34))
def test_every_leaf_of_every_tree_up_to_33_has_a_proof_that_verifies(n):
    entries = entries_of(n)
    root = merkle_root(entries)
    leaves = [encode(entry.as_json()) for entry in entries]
    for index, entry in enumerate(entries):
        proof = inclusion_proof(entries, entry.path)
        assert (proof.leaf_index, proof.tree_size) == (index, n)
        assert list(proof.audit_path) == [h.hex() for h in rfc6962_path(index, leaves)]
        assert verify_inclusion(root, entry, proof)


CHANGES = [
    ("path", lambda v: v[:-1] + "c"),
    ("media_type", lambda v: v[:-1] + "x"),
    ("size", lambda v: v + 1),
    ("sha256", lambda v: ("1" if v[0] == "0" else "0") + v[1:]),
    ("tokens", lambda v: v ^ 1),
    ("token_profile", lambda v: v + "x"),
]


@pytest.mark.parametrize("name,change", CHANGES, ids=[name for name, _ in CHANGES])
def test_an_entry_changed_in_any_field_no_longer_verifies(name, change):
    entries = entries_of(5)
    root = merkle_root(entries)
    for entry in entries:
        altered = replace(entry, **{name: change(getattr(entry, name))})
        assert not verify_inclusion(root, altered, inclusion_proof(entries, entry.path))


def test_a_changed_byte_anywhere_in_a_leaf_changes_its_hash():
    leaf = leaf_bytes(entries_of(1)[0])
    hashes = {leaf_hash(leaf[:i] + bytes([leaf[i] ^ 1]) + leaf[i + 1:]) for i in range(len(leaf))}
    assert len(hashes) == len(leaf) and leaf_hash(leaf) not in hashes


def test_another_leafs_proof_a_flipped_bit_or_a_wrong_place_fails():
    entries = entries_of(7)
    root = merkle_root(entries)
    for index, entry in enumerate(entries):
        proof = inclusion_proof(entries, entry.path)
        for other in entries:
            if other != entry:
                assert not verify_inclusion(root, entry, inclusion_proof(entries, other.path))
        for position, sibling in enumerate(proof.audit_path):
            for bit in (0, 255):
                flipped = bytearray.fromhex(sibling)
                flipped[bit // 8] ^= 1 << (bit % 8)
                path = list(proof.audit_path)
                path[position] = flipped.hex()
                assert not verify_inclusion(root, entry, replace(proof, audit_path=tuple(path)))
        for leaf_index in {index - 1, index + 1, 7, -1} - {index}:
            assert not verify_inclusion(root, entry, replace(proof, leaf_index=leaf_index))
        # A size of another shape (the root alone does not say how many leaves it has: a
        # size whose tree puts this leaf at the same place is still this leaf, in this tree).
        for tree_size in {0, 1, index, 16}:
            assert not verify_inclusion(root, entry, replace(proof, tree_size=tree_size))
        assert not verify_inclusion(root, entry, replace(proof, audit_path=proof.audit_path[:-1]))
        assert not verify_inclusion(root, entry,
                                    replace(proof, audit_path=proof.audit_path + (root,)))
        assert not verify_inclusion(("f" if root[0] != "f" else "e") + root[1:], entry, proof)


@pytest.mark.parametrize("n", [3, 5, 8, 13])
def test_a_reordered_proof_fails(n):
    entries = entries_of(n)
    root = merkle_root(entries)
    for entry in entries:
        proof = inclusion_proof(entries, entry.path)
        path = proof.audit_path
        for i in range(len(path) - 1):
            swapped = path[:i] + (path[i + 1], path[i]) + path[i + 2:]
            if swapped != path:
                assert not verify_inclusion(root, entry, replace(proof, audit_path=swapped))


def test_a_leaf_cannot_pass_as_a_node_nor_a_node_as_a_leaf():
    entries = entries_of(4)
    left, right = (sha256(b"\x00" + encode(e.as_json())) for e in entries[:2])
    node = node_hash(left, right)
    # Without the prefixes a leaf whose bytes are its children's hashes would hash to the node.
    assert leaf_hash(left + right) != node
    assert leaf_hash(b"\x01" + left + right) != node
    # A one-leaf tree over the node's children is not the two-leaf tree.
    assert rfc6962_root([left + right]) != rfc6962_root([encode(e.as_json()) for e in entries[:2]])
    # The node one level below the root, offered as a leaf of a two-leaf tree, reaches the root
    # only as a node: no entry's leaf hashes to it.
    root = merkle_root(entries)
    other_half = node_hash(*(leaf_hash(leaf_bytes(e)) for e in entries[2:]))
    assert node_hash(node, other_half).hex() == root
    assert all(leaf_hash(leaf_bytes(e)) != node for e in entries)
    assert not verify_inclusion(root, entries[0], InclusionProof(0, 2, (other_half.hex(),)))


def test_proof_document_carries_what_the_buyers_tool_reads():
    entries = entries_of(3)
    proof = inclusion_proof(entries, "./data/001.bin")
    assert proof_document(entries[1], proof) == {
        "format": "market-manifest-proof/1", "entry": entry_json(1), "leaf_index": 1,
        "tree_size": 3, "audit_path": list(proof.audit_path)}


def test_a_proof_for_a_file_not_listed_is_not_found():
    with pytest.raises(NotFound) as caught:
        inclusion_proof(entries_of(3), "data/999.bin")
    assert caught.value.field == "path"


def test_an_empty_manifest_has_no_root():
    with pytest.raises(InvalidInput) as caught:
        manifest([])
    assert caught.value.field == "entries"
    with pytest.raises(InvalidInput):
        merkle_root([])


# Paths -------------------------------------------------------------------------------------

@pytest.mark.parametrize("given,kept", [
    ("a.txt", "a.txt"),
    ("./images/./a.png", "images/a.png"),
    (unicodedata.normalize("NFD", "café/é.txt"), "café/é.txt"),
    ("文本/第1卷.jsonl", "文本/第1卷.jsonl"),
    ("a/..b/c..", "a/..b/c.."),
    ("x" * 255, "x" * 255),
    ("/".join(["x" * 200] * 5), "/".join(["x" * 200] * 5)),
])
def test_paths_are_kept_in_nfc_without_dot_segments(given, kept):
    assert normalize_path(given) == kept
    assert unicodedata.is_normalized("NFC", normalize_path(given))


@pytest.mark.parametrize("path", [
    "/etc/passwd", "../secret", "a/../../b", "a/..", "..", "a\\b", "C:x", "c:/x", "", ".", "./",
    "a//b", "a/", "a\x00b", "a\nb", "a\x7fb", "a\ud800b", "x" * 256, "/".join(["x" * 200] * 6),
    "x/" * 2100 + "x",
    7, None,
], ids=repr)
def test_a_path_that_could_leave_the_version_or_be_read_two_ways_is_refused(path):
    with pytest.raises(InvalidInput) as caught:
        manifest([entry_json(0), entry_json(1, path=path)])
    assert caught.value.field == "entries.1.path"
    assert caught.value.errors == {"entries.1.path": [caught.value.detail]}


@pytest.mark.parametrize("second", [
    "data/000.bin", "./data/000.bin", "data/./000.bin", "DATA/000.BIN",
])
def test_a_path_listed_twice_is_refused(second):
    with pytest.raises(InvalidInput) as caught:
        manifest([entry_json(0), entry_json(1), entry_json(2, path=second)])
    assert caught.value.field == "entries.2.path"


def test_the_same_name_in_nfd_and_nfc_is_one_path():
    nfc, nfd = "é.txt", unicodedata.normalize("NFD", "é.txt")
    assert nfc != nfd
    with pytest.raises(InvalidInput) as caught:
        manifest([entry_json(0, path=nfc), entry_json(1, path=nfd)])
    assert caught.value.field == "entries.1.path"


# Other fields ------------------------------------------------------------------------------

@pytest.mark.parametrize("name,value", [
    ("size", -1), ("size", True), ("size", 1.0), ("size", "12"), ("size", 2**63),
    ("tokens", -1), ("tokens", None), ("tokens", 2**63),
    ("sha256", "ab" * 31), ("sha256", "zz" * 32), ("sha256", 12), ("sha256", "ab" * 32 + "\n"),
    ("media_type", "image"), ("media_type", "text/plain; charset=utf-8"), ("media_type", "/png"),
    ("media_type", "image/png/x"), ("media_type", ""),
    ("token_profile", ""), ("token_profile", "Has Space"), ("token_profile", "x" * 65),
    ("token_profile", "OpenAI"),
])
def test_a_field_out_of_its_form_is_refused_naming_it(name, value):
    with pytest.raises(InvalidInput) as caught:
        manifest([entry_json(0, **{name: value})])
    assert caught.value.field == f"entries.0.{name}"


def test_digest_and_media_type_are_kept_in_lowercase():
    entry = parse_entry(entry_json(0, sha256="AB" * 32, media_type="Image/PNG"))
    assert (entry.sha256, entry.media_type) == ("ab" * 32, "image/png")


def test_a_missing_or_unknown_member_is_refused_naming_it():
    missing = entry_json(0)
    del missing["tokens"]
    with pytest.raises(InvalidInput) as caught:
        parse_entry(missing)
    assert caught.value.field == "entry.tokens"
    with pytest.raises(InvalidInput) as caught:
        parse_entry(entry_json(0, owner="x"))
    assert caught.value.field == "entry.owner"
    with pytest.raises(InvalidInput) as caught:
        manifest(["data/a.bin"])
    assert caught.value.field == "entries.0"
