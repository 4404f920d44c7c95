"""The dataset card: Hub YAML metadata, configs -> data_files, human sections."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from release_fixtures import build_tiny_release

from pipeline.release.card import card_metadata, config_data_files, render_card, size_category, write_dataset_card


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return build_tiny_release(tmp_path_factory.mktemp("card"))


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_metadata_maps_every_config_to_its_shards(release):
    meta = front_matter((release / "README.md").read_text())
    assert meta["license"] == "cc-by-4.0" and meta["pretty_name"] == "Tiny shift"
    assert meta["task_categories"] == ["image-classification"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["source_datasets"] == ["scikit-image"]
    assert meta["tags"] == ["robustness", "shiftforge", "webdataset"]
    assert meta["configs"] == [
        {"config_name": name, "data_files": [{"split": "test", "path": f"data/{name}/*.tar"}]}
        for name in ["contrast-1", "contrast-3", "gaussian_noise-1", "gaussian_noise-3"]]
    # every glob matches exactly the shards provenance lists for that config
    provenance = json.loads((release / "provenance.json").read_text())
    for config in meta["configs"]:
        matched = sorted(p.relative_to(release).as_posix()
                         for p in release.glob(config["data_files"][0]["path"]))
        assert matched == sorted(provenance["configs"][config["config_name"]]["shards"])
        assert len(matched) == 2                                # 3 images, 2 per shard


def test_card_body_has_shifts_counts_provenance_and_citations(release):
    text = (release / "README.md").read_text()
    assert "| `contrast-3` | corruptions | corruption=\"contrast\", severity=3 | 3 | 0 | 0 | 2 |" in text
    assert "12 samples in 4 shift configs (0 rejected by filters, 0 errors, 12 attempted)" in text
    provenance = json.loads((release / "provenance.json").read_text())
    assert provenance["source"]["index_sha256"] in text and provenance["manifest_sha256"] in text
    assert "ImageNet-C: D. Hendrycks and T. Dietterich" in text
    assert "@misc{tiny, title={Tiny shift}}" in text
    assert 'load_dataset("org/tiny-shift", "contrast-1", split="test")' in text


def test_rewriting_the_card_is_deterministic(release):
    before = (release / "README.md").read_bytes()
    write_dataset_card(release)
    assert (release / "README.md").read_bytes() == before


def test_per_split_data_files_when_each_shard_holds_one_split():
    shards = ["data/cat-dog/test-00000.tar", "data/cat-dog/test-00001.tar", "data/cat-dog/test-00002.tar"]
    splits = {shards[0]: {"train"}, shards[1]: {"train"}, shards[2]: {"test"}}
    assert config_data_files("cat-dog", shards, splits) == [
        {"split": "test", "path": [shards[2]]}, {"split": "train", "path": shards[:2]}]
    # a shard mixing splits cannot be split by file: everything stays one test split
    mixed = {**splits, shards[2]: {"train", "test"}}
    assert config_data_files("cat-dog", shards, mixed) == [{"split": "test", "path": "data/cat-dog/*.tar"}]


def test_filters_acceptance_and_empty_configs():
    provenance = {
        "release": {"name": "x", "version": "1", "license": "mit", "seed": 0},
        "manifest": {"filters": {"rules": ["quality"]}, "hub": {}},
        "configs": {"a": {"stage": "styles", "params": {"style": "sketch"},
                          "shards": ["data/a/test-00000.tar"],
                          "counts": {"ok": 3, "rejected": 1, "error": 0}},
                    "b": {"stage": "styles", "params": {"style": "toy"}, "shards": [],
                          "counts": {"ok": 0, "rejected": 4, "error": 0}}},
        "counts": {"total": 8, "ok": 3, "rejected": 5, "error": 0},
    }
    text = render_card(provenance)
    assert [c["config_name"] for c in card_metadata(provenance, {})["configs"]] == ["a"]   # b has no shard
    assert "Overall acceptance: 3/8 (37.5%)" in text
    assert "- `a`: 3/4 accepted (75.0%)" in text and "- `b`: 0/4 accepted (0.0%)" in text
    assert "COCO-O" in text


@pytest.mark.parametrize(("n", "expected"), [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"),
                                             (250_000, "100K<n<1M"), (5_000_000_000, "n>1B")])
def test_size_category(n, expected):
    assert size_category(n) == expected


def test_load_dataset_reads_a_config_from_the_folder(release, tmp_path):
    """The card's configs are what `datasets.load_dataset(folder, config)` follows (offline)."""
    pytest.importorskip("datasets")
    script = (f"import datasets, json; ds = datasets.load_dataset({str(release)!r}, 'gaussian_noise-3', "
              "split='test'); print(json.dumps([len(ds), sorted(ds[0]), list(ds[0]['png'].size), "
              "sorted(r['shift']['severity'] for r in ds['json'])]))")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    count, columns, size, severities = json.loads(run.stdout.strip().splitlines()[-1])
    assert count == 3 and size == [32, 32] and severities == [3, 3, 3]
    assert columns == ["__key__", "__url__", "json", "png"]
