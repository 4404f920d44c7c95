"""The second pass of a filtered release: release-wide dedup, evenly filled final shards
copied from the staging tars, resumable packing."""

import hashlib
import json
import shutil
import tarfile

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
import zarr

from pipeline.core.build import build_release
from pipeline.core.manifest import parse_release
from pipeline.core.packing import plan_packs
from pipeline.core.records import ShardRecord
from pipeline.release.verify import verify_release
from stages.filters import FiltersSpec, release_rejections
from stages.filters.dedup import bits_from_hex, duplicates_of_earlier, hash_hex

# items 0 and 3 are both the centre crop of astronaut, and land in different units (3 items per unit)
MANIFEST = {
    "name": "packed", "version": "0.1.0", "seed": 3,
    "source": {"kind": "samples", "images": ["astronaut", "chelsea", "coffee", "astronaut"], "count": 10,
               "size": 32},
    "shifts": [{"stage": "corruptions", "corruptions": ["contrast"], "severities": [1, 5]}],
    "filters": {"chain": [{"filter": "quality", "min_std": 20}, {"filter": "dedup"}]},
    "output": {"formats": ["webdataset", "zarr"], "samples_per_shard": 3, "image_size": [32, 32]},
}


def tar_members(path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def final_hashes(out) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((out / "data").glob("*/*.tar"))}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("packed") / "release"
    result = build_release(parse_release(MANIFEST), out, workers=1)
    return out, result


def test_final_shards_are_evenly_filled_with_the_accepted_samples_in_source_order(built):
    out, result = built
    assert (result.built, result.packed) == (8, 6)
    samples = pd.read_parquet(out / "samples.parquet")
    prov = json.loads((out / "provenance.json").read_text())
    assert [(s["path"], s["count"]) for s in prov["shards"]] == [
        ("data/contrast-1/test-00000.tar", 3), ("data/contrast-1/test-00001.tar", 3),
        ("data/contrast-1/test-00002.tar", 3), ("data/contrast-5/test-00000.tar", 3),
        ("data/contrast-5/test-00001.tar", 3), ("data/contrast-5/test-00002.tar", 1)]
    for config in ("contrast-1", "contrast-5"):
        ok = samples[(samples["config"] == config) & (samples["status"] == "ok")]
        paths = prov["configs"][config]["shards"]
        stored = [name.split(".")[0] for path in paths for name, _ in tar_members(out / path)]
        assert list(dict.fromkeys(stored)) == list(ok["key"])        # source order, across shards
        for path in paths:
            keys = [name.split(".")[0] for name, _ in tar_members(out / path)]
            assert set(ok.loc[ok["shard"] == path, "key"]) == set(keys)
            entry = next(s for s in prov["shards"] if s["path"] == path)
            assert (entry["first_key"], entry["last_key"]) == (keys[0], keys[-1])
    assert samples.loc[samples["status"] != "ok", "shard"].isna().all()
    urls = [str(out / s["path"]) for s in prov["shards"]]
    read = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8"))
    assert len(read) == 16 and all(s["png"].shape == (32, 32, 3) for s in read)


def test_cross_unit_duplicate_is_rejected_naming_the_kept_sample(built):
    out, _ = built
    samples = pd.read_parquet(out / "samples.parquet").set_index(["config", "key"])
    duplicate = samples.loc[("contrast-1", "astronaut-000003")]
    assert duplicate["status"] == "rejected"
    assert duplicate["reason"] == "dedup_distance 0 < 5: near-duplicate of astronaut-000000"
    kept = samples.loc[("contrast-1", "astronaut-000000")]
    assert kept["status"] == "ok"
    assert json.loads(kept["meta"])["phash"] == json.loads(duplicate["meta"])["phash"]
    # its own task accepted it: it is staged, but no final shard holds it
    staged = [name for name, _ in tar_members(out / ".staging/contrast-1/unit-00001.tar")]
    assert "astronaut-000003.png" in staged
    assert samples.loc[("contrast-5", "astronaut-000000"), "reason"].startswith("quality_std ")


def test_members_are_copied_byte_for_byte_and_zarr_masks_the_rejected(built):
    out, _ = built
    staged = dict(m for p in sorted((out / ".staging").glob("*/*.tar")) if "contrast-1" in str(p)
                  for m in tar_members(p))
    final = [m for p in sorted((out / "data/contrast-1").glob("*.tar")) for m in tar_members(p)]
    assert len(final) == 9 * 2 and all(staged[name] == data for name, data in final)
    group = zarr.open_group(str(out / "zarr" / "contrast-1.zarr"), mode="r")
    valid = dict(zip(group["keys"][:], group["valid"][:]))
    assert not valid["astronaut-000003"] and sum(valid.values()) == 9


def test_counts_add_up_and_verify_passes(built):
    out, result = built
    assert result.counts == {"total": 20, "ok": 16, "rejected": 4, "error": 0}
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["configs"]["contrast-1"]["counts"] == {"ok": 9, "rejected": 1, "error": 0}
    assert sum(s["count"] for s in prov["shards"]) == prov["counts"]["ok"] == 16
    assert verify_release(out).ok


def test_rerun_packs_nothing_and_a_lost_shard_is_repacked_identically(built, tmp_path):
    source, _ = built
    out = tmp_path / "copy"
    shutil.copytree(source, out)
    before = final_hashes(out)
    again = build_release(parse_release(MANIFEST), out, workers=1)
    assert (again.built, again.packed, again.removed) == (0, 0, [])
    (out / "data/contrast-5/test-00001.tar").unlink()
    (out / "data/contrast-5/test-00009.tar").write_bytes(b"stale")
    repaired = build_release(parse_release(MANIFEST), out, workers=1)
    assert (repaired.built, repaired.packed, repaired.removed) == (0, 1, ["contrast-5/test-00009"])
    assert final_hashes(out) == before and verify_release(out).ok

    unfiltered = {k: v for k, v in MANIFEST.items() if k != "filters"}
    plain = build_release(parse_release(unfiltered), out, workers=1)
    assert plain.counts["ok"] == 20 and not (out / ".staging").exists()
    assert len(final_hashes(out)) == 8 and verify_release(out).ok


def rows(*specs):
    """(key, source_key, status, phash hex, trajectory, scale) -> table rows."""
    return [{"key": k, "source_key": src, "status": st, "meta": json.dumps({"phash": ph} if ph else {}),
             "shift": json.dumps({} if traj is None else {"trajectory": traj, "scale": scale})}
            for k, src, st, ph, traj, scale in specs]


def test_duplicates_compare_with_kept_samples_only():
    base = np.zeros(64, bool)
    near = base.copy()
    near[:3] = True                      # 3 bits from base
    far = base.copy()
    far[:6] = True                       # 3 bits from near, 6 from base
    bits = np.stack([base, near, far, base])
    found = duplicates_of_earlier(bits, ["a", "b", "c", "a"], min_distance=5)
    assert found == {1: (0, 3)}          # far is kept (near was rejected); same-group base is not compared
    assert np.array_equal(bits_from_hex(hash_hex(near), 64), near)


def test_release_rules_reject_duplicates_then_incomplete_trajectories():
    same, other = hash_hex(np.zeros(64, bool)), hash_hex(np.ones(64, bool))
    table = rows(("t0s0", "x", "ok", same, "t0", 0.0), ("t0s1", "x", "ok", other, "t0", 1.0),
                 ("t1s0", "y", "ok", same, "t1", 0.0), ("t1s1", "y", "ok", None, "t1", 1.0),
                 ("t2s0", "z", "ok", None, "t2", 0.0), ("t2s1", "z", "error", None, "t2", 1.0))
    spec = FiltersSpec(chain=[{"filter": "dedup"}], complete_trajectory=True)
    assert release_rejections(table, spec) == {
        2: "dedup_distance 0 < 5: near-duplicate of t0s0",
        3: "incomplete trajectory t1: scale 0.0 rejected",
        4: "incomplete trajectory t2: scale 1.0 error"}


def test_packs_cut_accepted_samples_into_even_shards_and_fingerprint_their_inputs():
    def unit(n, statuses):
        return ShardRecord(shard_id=f"c/test-{n:05d}", config="c", fingerprint="f", path=f".staging/c/unit-{n:05d}.tar",
                           sha256=f"sha{n}", bytes=1, count=0, first_key=None, last_key=None, counts={}, seconds=0,
                           rows=[{"key": f"k{n}{i}", "status": s} for i, s in enumerate(statuses)])

    packs = plan_packs([unit(0, ["ok", "rejected", "ok"]), unit(1, ["ok", "ok", "error"])], per_shard=2)
    assert [(p.shard_id, p.takes) for p in packs] == [
        ("c/test-00000", ((".staging/c/unit-00000.tar", "sha0", ("k00", "k02")),)),
        ("c/test-00001", ((".staging/c/unit-00001.tar", "sha1", ("k10", "k11")),))]
    moved = plan_packs([unit(0, ["ok", "ok", "ok"]), unit(1, ["ok", "ok", "error"])], per_shard=2)
    assert moved[0].fingerprint != packs[0].fingerprint
    assert moved[0].takes[0][2] == ("k00", "k01")
