"""Per-sample seeds: distinct per (config, key), recorded, and enough to reproduce a
stochastic sample from its clean source."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from pipeline.core.seeding import derive_seed
from stages.corruptions import corrupt
from tests.pipeline.release_fixtures import build_tiny_release

SOURCE = {"kind": "samples", "images": ["astronaut", "chelsea", "coffee"], "count": 5, "size": 32}


def expected_seed(*parts: object) -> int:
    """The documented derivation, written out: blake2b-64 of the parts joined by U+001F, top 63 bits."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    out = build_tiny_release(tmp_path_factory.mktemp("seeds"), source=SOURCE)
    rows = pq.read_table(out / "samples.parquet").to_pandas()
    return out, rows


def test_derive_seed_is_the_documented_hash_and_depends_on_every_part():
    assert derive_seed(7, "corruptions", "gaussian_noise-1", "astronaut-000000") == expected_seed(
        7, "corruptions", "gaussian_noise-1", "astronaut-000000")
    base = (7, "corruptions", "gaussian_noise-1", "astronaut-000000")
    variants = [(8, *base[1:]), (7, "medical", *base[2:]), (*base[:2], "gaussian_noise-3", base[3]),
                (*base[:3], "astronaut-000003")]
    seeds = {derive_seed(*base), *(derive_seed(*v) for v in variants)}
    assert len(seeds) == 5
    assert all(0 <= s < 2**63 for s in seeds)


def test_recorded_seeds_are_distinct_per_config_and_key(release):
    _, rows = release
    assert len(rows) == 20                                   # 5 keys × 4 configs
    assert rows["seed"].nunique() == len(rows)
    for row in rows.itertuples():
        assert row.seed == expected_seed(7, "corruptions", row.config, row.key), (row.config, row.key)


def _samples(out, config: str) -> dict[str, dict]:
    urls = sorted(str(p) for p in (out / "data" / config).glob("*.tar"))
    return {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False).decode("rgb8")}


def _clean(key: str) -> np.ndarray:
    from pipeline.sources.samples import SamplesSource, SamplesSpec

    source = SamplesSource(SamplesSpec(**SOURCE))
    return source.load(next(item for item in source.index() if item.key == key)).image


@pytest.mark.parametrize("config, severity", [("gaussian_noise-1", 1), ("gaussian_noise-3", 3)])
def test_a_stochastic_sample_is_reproduced_from_its_recorded_seed(release, config, severity):
    out, _ = release
    samples = _samples(out, config)
    for key in ("astronaut-000000", "coffee-000002"):
        doc = samples[key]["json"]
        clean = _clean(key)
        again = corrupt(clean, "gaussian_noise", severity, seed=doc["seed"])
        assert np.array_equal(samples[key]["png"], again)
        # another seed gives other noise, so the equality above says something
        assert not np.array_equal(samples[key]["png"], corrupt(clean, "gaussian_noise", severity, seed=doc["seed"] + 1))


def _noise(sample: dict, key: str) -> np.ndarray:
    return (sample["png"].astype(np.int16) - _clean(key).astype(np.int16)).ravel()


def test_each_key_of_a_config_gets_its_own_noise(release):
    out, _ = release
    samples = _samples(out, "gaussian_noise-1")
    # one seed for the whole config would give the same draws at every pixel (corr ≈ 1 up to clipping)
    a, b = _noise(samples["astronaut-000000"], "astronaut-000000"), _noise(samples["chelsea-000001"], "chelsea-000001")
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.2


def test_the_same_key_gets_different_noise_in_each_config(release):
    out, _ = release
    one = _samples(out, "gaussian_noise-1")["chelsea-000001"]
    three = _samples(out, "gaussian_noise-3")["chelsea-000001"]
    # severity 3 with severity 1's draws would be the same noise scaled by .18/.08 (corr ≈ 1)
    assert one["json"]["seed"] != three["json"]["seed"]
    assert abs(np.corrcoef(_noise(one, "chelsea-000001"), _noise(three, "chelsea-000001"))[0, 1]) < 0.2
