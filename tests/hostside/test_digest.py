"""The target digest finalize recomputes (hostside.verify.target_digest), held to its
written definition by an independent reference implementation (docs/hostside.md)."""

from __future__ import annotations

import hashlib
import os

import pytest

from hostside import verify

pytestmark = pytest.mark.unit

MiB = 1 << 20


def _sparse_file(path, writes, size):
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in writes:
            f.seek(off)
            f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _runs(path):
    """The data runs the digest covers (SEEK_DATA/SEEK_HOLE: this file has no unwritten
    extents, so FIEMAP's written extents give the same runs)."""
    fd, runs, pos = os.open(path, os.O_RDONLY), [], 0
    try:
        size = os.fstat(fd).st_size
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            runs.append((start, end - start))
            pos = end
    finally:
        os.close(fd)
    return runs


def _reference_v3(path, piece=16 * MiB):
    """Each run cut at multiples of 16 MiB; sha256 of every piece; sha256 of the lines
    b"<offset>+<length> <piece sha256 hex>\\n" in file order."""
    top = hashlib.sha256()
    with open(path, "rb") as f:
        for start, length in _runs(path):
            pos, end = start, start + length
            while pos < end:
                cut = min(end, (pos // piece + 1) * piece)
                f.seek(pos)
                top.update(f"{pos}+{cut - pos} {hashlib.sha256(f.read(cut - pos)).hexdigest()}\n"
                           .encode())
                pos = cut
    return top.hexdigest()


def _reference_v2(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for start, length in _runs(path):
            f.seek(start)
            h.update(f"{start}+{length}\n".encode() + f.read(length))
    return h.hexdigest()


@pytest.fixture
def scattered(tmp_path):
    """Runs inside one piece, across a piece boundary, and several pieces long."""
    path = tmp_path / "t.raw"
    rnd = hashlib.sha256(b"seed").digest() * 4096          # 128 KiB of varied bytes
    _sparse_file(path, [(0, rnd[:4096]), (15 * MiB, rnd * 16),    # 2 MiB over 16 MiB
                        (40 * MiB, rnd * 300), (100 * MiB - 4096, rnd[:4096])], 100 * MiB)
    return path


def test_v3_is_its_definition_whatever_the_number_of_hashing_threads(scattered, monkeypatch):
    stated = verify.target_digest(str(scattered))
    assert stated == {"algorithm": "sha256-data-runs/3", "sha256": _reference_v3(scattered),
                      "size": 100 * MiB}
    real = verify._PieceHasher.__init__
    for workers in (1, 3):
        monkeypatch.setattr(verify._PieceHasher, "__init__",
                            lambda self, w=None, _n=workers: real(self, _n))
        assert verify.target_digest(str(scattered)) == stated


def test_v2_can_still_be_recomputed(scattered):
    got = verify.target_digest(str(scattered), "sha256-data-runs/2")
    assert got == {"algorithm": "sha256-data-runs/2", "sha256": _reference_v2(scattered),
                   "size": 100 * MiB}
    with pytest.raises(ValueError, match="unknown digest"):
        verify.target_digest(str(scattered), "sha256-data-runs/1")


def test_one_changed_byte_changes_the_digest(scattered):
    before = verify.target_digest(str(scattered))
    with open(scattered, "r+b") as f:
        f.seek(40 * MiB + 17 * MiB)
        f.write(b"\x00")
    assert verify.target_digest(str(scattered))["sha256"] != before["sha256"]
