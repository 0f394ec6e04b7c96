"""The buyer's offline check, run as a buyer runs it: ``tools/verify_manifest.py`` in a Python
without site-packages (``-I -S``, so the standard library alone), on files of a manifest built
by the catalogue, then on a tampered file, a tampered entry or proof, and another version's root."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from market.catalog.manifest import inclusion_proof, manifest, merkle_root, proof_document

ROOT = Path(__file__).resolve().parents[3]
TOOL = ROOT / "tools" / "verify_manifest.py"
FILES = {
    "images/0001.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40,
    "audio/clip.wav": b"RIFF" + b"\x00\x01" * 5000,
    "series/sensor.csv": b"time,value\n" + b"".join(b"%d,%d\n" % (i, i * i) for i in range(500)),
    "文本/说明.txt": "数据集说明。".encode(),
    "README.md": b"# A dataset\n",
}
MEDIA = {"png": "image/png", "wav": "audio/wav", "csv": "text/csv", "txt": "text/plain",
         "md": "text/markdown"}


@pytest.fixture
def version(tmp_path):
    """A version's files on the buyer's disk, its manifest, and each file's proof."""
    entries = manifest({"path": path, "media_type": MEDIA[path.rsplit(".", 1)[1]],
                        "size": len(content), "sha256": hashlib.sha256(content).hexdigest(),
                        "tokens": len(content) // 4, "token_profile": "bytes/1"}
                       for path, content in FILES.items())
    files, proofs = {}, {}
    for number, entry in enumerate(entries):
        files[entry.path] = tmp_path / f"download-{number}"
        files[entry.path].write_bytes(FILES[entry.path])
        proofs[entry.path] = tmp_path / f"proof-{number}.json"
        proofs[entry.path].write_text(json.dumps(proof_document(
            entry, inclusion_proof(entries, entry.path)), ensure_ascii=False), encoding="utf-8")
    return merkle_root(entries), files, proofs


def run(root: str, proof: Path, file: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", "-S", str(TOOL), "--root", root, str(proof),
                           str(file)], capture_output=True, text=True, timeout=60)


def test_every_file_of_the_version_verifies_against_its_root(version):
    root, files, proofs = version
    for path in FILES:
        outcome = run(root, proofs[path], files[path])
        assert outcome.returncode == 0, outcome.stderr
        assert f"verified: {files[path]} is {path!r}" in outcome.stdout
        assert root in outcome.stdout
    assert run(root.upper(), proofs["README.md"], files["README.md"]).returncode == 0


def test_a_file_with_one_byte_changed_fails_on_its_sha256(version):
    root, files, proofs = version
    content = bytearray(FILES["images/0001.png"])
    content[1000] ^= 1
    files["images/0001.png"].write_bytes(bytes(content))
    outcome = run(root, proofs["images/0001.png"], files["images/0001.png"])
    assert outcome.returncode == 1
    assert f"its SHA-256 is {hashlib.sha256(content).hexdigest()}, but the entry for " \
           "'images/0001.png' says" in outcome.stderr
    assert "the file was altered or is another file" in outcome.stderr
    assert "leads to the root" not in outcome.stderr  # the entry itself is still the version's


def test_a_truncated_file_fails_on_its_size(version):
    root, files, proofs = version
    files["audio/clip.wav"].write_bytes(FILES["audio/clip.wav"][:-1])
    outcome = run(root, proofs["audio/clip.wav"], files["audio/clip.wav"])
    assert outcome.returncode == 1
    size = len(FILES["audio/clip.wav"])
    assert f"{size - 1} bytes, but the entry for 'audio/clip.wav' says {size}" in outcome.stderr


def test_a_tampered_file_with_its_entry_rewritten_to_match_fails_on_the_root(version):
    root, files, proofs = version
    forged = b"# Another dataset\n"
    files["README.md"].write_bytes(forged)
    document = json.loads(proofs["README.md"].read_text(encoding="utf-8"))
    document["entry"] |= {"size": len(forged), "sha256": hashlib.sha256(forged).hexdigest()}
    proofs["README.md"].write_text(json.dumps(document), encoding="utf-8")
    outcome = run(root, proofs["README.md"], files["README.md"])
    assert outcome.returncode == 1
    assert "the entry for 'README.md' with its proof leads to the root" in outcome.stderr
    assert f"not {root}: the entry or the proof was altered" in outcome.stderr


@pytest.mark.parametrize("tamper", [
    lambda d: d["entry"].update(tokens=d["entry"]["tokens"] + 1),
    lambda d: d["entry"].update(token_profile="text/o200k_base"),
    lambda d: d["entry"].update(path="images/0002.png"),
    lambda d: d.update(audit_path=list(reversed(d["audit_path"]))),
    lambda d: d.update(audit_path=d["audit_path"][:-1]),
    lambda d: d.update(leaf_index=d["leaf_index"] ^ 1),
], ids=["tokens", "token_profile", "path", "reordered proof", "short proof", "index"])
def test_a_tampered_entry_or_proof_fails(version, tamper):
    root, files, proofs = version
    document = json.loads(proofs["images/0001.png"].read_text(encoding="utf-8"))
    tamper(document)
    proofs["images/0001.png"].write_text(json.dumps(document), encoding="utf-8")
    outcome = run(root, proofs["images/0001.png"], files["images/0001.png"])
    assert outcome.returncode == 1
    assert "'images/0001.png'" in outcome.stderr or "'images/0002.png'" in outcome.stderr


def test_another_versions_root_fails(version):
    root, files, proofs = version
    other = hashlib.sha256(b"another version").hexdigest()
    outcome = run(other, proofs["README.md"], files["README.md"])
    assert outcome.returncode == 1
    assert f"not {other}" in outcome.stderr


@pytest.mark.parametrize("content,message", [
    ("not json", "not a readable JSON proof"),
    ('{"format": "other/1"}', "not a proof of format market-manifest-proof/1"),
    ('{"format": "market-manifest-proof/1", "entry": {"path": "a"}}',
     "the entry's media_type is not text"),
])
def test_an_unreadable_proof_is_exit_status_2(version, tmp_path, content, message):
    root, files, _ = version
    proof = tmp_path / "bad.json"
    proof.write_text(content, encoding="utf-8")
    outcome = run(root, proof, files["README.md"])
    assert outcome.returncode == 2
    assert message in outcome.stderr


def test_a_root_that_is_not_a_digest_is_exit_status_2(version):
    _, files, proofs = version
    outcome = run("abc", proofs["README.md"], files["README.md"])
    assert outcome.returncode == 2
    assert "not 64 hexadecimal digits" in outcome.stderr
