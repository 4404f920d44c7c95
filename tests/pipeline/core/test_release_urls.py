"""Releases written to fsspec URLs (file://, memory://) instead of plain folders."""

import hashlib
import json
import logging

import fsspec
import numpy as np
import pytest
import zarr
from dask.distributed import LocalCluster

from pipeline.core.build import build_release
from pipeline.core.journal import read_journal
from pipeline.core.manifest import parse_release
from pipeline.release.verify import verify_release
from pipeline.writers.files import ReleaseStore
from tests.conftest import TINY_RELEASE

MEMORY_URL = "memory://shiftforge-test/release"


@pytest.fixture(scope="module")
def scheduler():
    """Worker threads in this process: memory:// exists only inside one process."""
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def builds(tmp_path_factory, scheduler):
    release = parse_release(TINY_RELEASE)
    local = tmp_path_factory.mktemp("local")
    as_url = tmp_path_factory.mktemp("file-url")
    results = {
        "local": build_release(release, local, scheduler=scheduler),
        "file": build_release(release, f"file://{as_url}", scheduler=scheduler),
        "memory": build_release(release, MEMORY_URL, scheduler=scheduler),
    }
    yield {"local": str(local), "file": f"file://{as_url}", "memory": MEMORY_URL}, results
    fsspec.filesystem("memory").rm("/shiftforge-test", recursive=True)


def shard_digests(out: str) -> dict[str, str]:
    store = ReleaseStore(out)
    return {rel: hashlib.sha256(store.read_bytes(rel)).hexdigest() for rel in store.glob("data/*/*.tar")}


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_url_release_matches_local_build_byte_for_byte(builds, kind):
    outs, results = builds
    assert results[kind].built == 12
    assert results[kind].counts == {"total": 20, "ok": 20, "rejected": 0, "error": 0}
    local, remote = shard_digests(outs["local"]), shard_digests(outs[kind])
    assert len(local) == 12
    assert remote == local
    report = verify_release(outs[kind])
    assert report.ok, report.problems
    assert (report.shards, report.samples) == (12, 20)
    store = ReleaseStore(outs[kind])
    for name in ("samples.parquet", "journal.jsonl", "README.md", "croissant.json"):
        assert store.exists(name), name
    prov = json.loads(store.read_text("provenance.json"))
    local_prov = json.loads(ReleaseStore(outs["local"]).read_text("provenance.json"))
    assert [s["sha256"] for s in prov["shards"]] == [s["sha256"] for s in local_prov["shards"]]
    assert len(read_journal(outs[kind])) == 12


def test_zarr_store_in_memory_holds_the_same_pixels(builds):
    outs, _ = builds
    local = zarr.open_group(f"{outs['local']}/zarr/contrast-5.zarr", mode="r")
    remote = zarr.open_group(f"{outs['memory']}/zarr/contrast-5.zarr", mode="r")
    assert remote["images"].shape == (5, 48, 48, 3)
    np.testing.assert_array_equal(remote["images"][:], local["images"][:])
    assert list(remote["keys"][:]) == list(local["keys"][:])


def test_memory_release_rebuild_skips_everything_and_drops_orphans(builds):
    outs, _ = builds
    store = ReleaseStore(outs["memory"])
    store.write_atomic("data/retired-1/test-00000.tar", b"left over from an older plan")
    again = build_release(parse_release(TINY_RELEASE), outs["memory"])  # no cluster needed: nothing to build
    assert (again.built, again.skipped, again.removed) == (0, 12, ["retired-1/test-00000"])
    assert not store.exists("data/retired-1/test-00000.tar")
    assert verify_release(outs["memory"]).ok


def test_verify_catches_a_flipped_byte_in_memory(builds):
    outs, _ = builds
    store = ReleaseStore(outs["memory"])
    rel = "data/gaussian_noise-1/test-00001.tar"
    original = store.read_bytes(rel)
    flipped = bytearray(original)
    flipped[600] ^= 0xFF
    store.write_atomic(rel, bytes(flipped))
    try:
        problems = verify_release(outs["memory"]).problems
    finally:
        store.write_atomic(rel, original)
    assert len(problems) == 1 and problems[0].startswith(f"{rel}: sha256")
