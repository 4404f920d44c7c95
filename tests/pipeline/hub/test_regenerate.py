"""Regenerate: only what changed is rebuilt (and published); nothing changed -> nothing done."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import HubServer
from release_fixtures import TINY_MANIFEST, write_manifest

from pipeline.hub.publish import RetryPolicy
from pipeline.hub.regenerate import RUN_LOCK, LockHeld, exclusive_lock, regenerate_release

CONFIGS = ["contrast-1", "contrast-3", "gaussian_noise-1", "gaussian_noise-3"]


@pytest.fixture(scope="module")
def scheduler():
    """An in-process Dask cluster: fast to reuse, and workers see monkeypatched stage classes."""
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def file_hashes(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != RUN_LOCK}


def regenerate(tmp_path: Path, scheduler: str, **changes):
    manifest = write_manifest(tmp_path / "tiny.yaml", **changes)
    return regenerate_release(manifest, tmp_path / "release", scheduler=scheduler)


def test_nothing_changed_does_nothing_and_says_so(tmp_path, scheduler):
    first = regenerate(tmp_path, scheduler)
    assert first.revision_before is None and first.revision == 1 and first.built == 8
    before = file_hashes(tmp_path / "release")
    again = regenerate(tmp_path, scheduler)
    assert not again.changed and again.built == 0 and again.removed == [] and again.revision == 1
    assert again.summary().startswith("nothing changed (8 shards up to date, revision 1)")
    assert file_hashes(tmp_path / "release") == before


def test_one_parameter_changed_rebuilds_its_configs_and_drops_orphans(tmp_path, scheduler):
    regenerate(tmp_path, scheduler)
    before = file_hashes(tmp_path / "release")
    shifts = [{**TINY_MANIFEST["shifts"][0], "severities": [1, 5]}]
    result = regenerate(tmp_path, scheduler, shifts=shifts)
    assert result.built == 4 and result.skipped == 4 and result.revision == 2
    assert sorted(result.removed) == [f"{c}-3/test-0000{i}" for c in ("contrast", "gaussian_noise")
                                      for i in (0, 1)]
    after = file_hashes(tmp_path / "release")
    assert sorted(p.split("/")[1] for p in after if p.endswith(".tar")) == sorted(
        ["contrast-1", "contrast-5", "gaussian_noise-1", "gaussian_noise-5"] * 2)
    unchanged = [p for p in after if p.startswith("data/") and before.get(p) == after[p]]
    assert sorted(unchanged) == sorted(f"data/{c}/test-0000{i}.tar"
                                       for c in ("contrast-1", "gaussian_noise-1") for i in (0, 1))
    card = (tmp_path / "release/README.md").read_text()
    assert "config_name: contrast-5" in card and "contrast-3" not in card


def test_one_source_image_added_rebuilds_only_the_last_shard_of_each_config(tmp_path, scheduler):
    regenerate(tmp_path, scheduler)
    before = file_hashes(tmp_path / "release")
    source = {**TINY_MANIFEST["source"], "images": ["astronaut", "chelsea", "coffee", "camera"]}
    result = regenerate(tmp_path, scheduler, source=source)
    assert result.built == 4 and result.skipped == 4 and result.removed == [] and result.revision == 2
    after = file_hashes(tmp_path / "release")
    changed = sorted(p for p in after if p.endswith(".tar") and before.get(p) != after[p])
    assert changed == [f"data/{c}/test-00001.tar" for c in CONFIGS]
    assert json.loads((tmp_path / "release/provenance.json").read_text())["counts"]["ok"] == 16


def test_stage_version_bump_rebuilds_every_shard_of_that_stage(tmp_path, scheduler, monkeypatch):
    from stages import get_stage

    regenerate(tmp_path, scheduler)
    monkeypatch.setattr(get_stage("corruptions"), "version", "99")
    result = regenerate(tmp_path, scheduler)
    assert result.built == 8 and result.skipped == 0 and result.revision == 2
    provenance = json.loads((tmp_path / "release/provenance.json").read_text())
    assert [s["version"] for s in provenance["stages"]] == ["99"]


def test_regenerate_publishes_only_changed_files(tmp_path, scheduler, monkeypatch):
    import huggingface_hub.constants
    from huggingface_hub import HfApi

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    with HubServer() as hub:
        api = HfApi(endpoint=hub.url, token="hf_regenerate_test_token")
        manifest = write_manifest(tmp_path / "tiny.yaml")
        kwargs = dict(scheduler=scheduler, publish=True, api=api, retry=RetryPolicy(2, 0.0, lambda s: None))
        first = regenerate_release(manifest, tmp_path / "release", **kwargs)
        assert first.published.tagged
        assert hub.state.repos["org/tiny-shift"].tags == {"1.0.0": first.published.head}
        quiet = regenerate_release(manifest, tmp_path / "release", **kwargs)
        assert quiet.summary().split("; ")[:2] == ["nothing changed (8 shards up to date, revision 1)",
                                                   "12 ok samples"]
        assert "org/tiny-shift already up to date" in quiet.summary()
        hub.state.requests.clear()
        shifts = [{**TINY_MANIFEST["shifts"][0], "severities": [1, 5]}]
        changed = regenerate_release(write_manifest(tmp_path / "tiny.yaml", shifts=shifts),
                                     tmp_path / "release", **kwargs)
    plan = changed.published.plan
    assert sorted(f.path for f in plan.uploads if f.path.endswith(".tar")) == sorted(
        f"data/{c}-5/test-0000{i}.tar" for c in ("contrast", "gaussian_noise") for i in (0, 1))
    assert len(plan.deletions) == 4 and changed.published.plan.tag == "1.0.0-r2"
    assert hub.state.count("PUT", "/lfs-upload/") == 5            # four new shards + samples.parquet


def test_a_second_run_cannot_overlap(tmp_path):
    out = tmp_path / "release"
    with exclusive_lock(out / RUN_LOCK):
        with pytest.raises(LockHeld, match="another run is in progress"):
            regenerate_release(write_manifest(tmp_path / "tiny.yaml"), out)
        cli = subprocess.run([sys.executable, "-m", "pipeline", "regenerate", str(tmp_path / "tiny.yaml"),
                              "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 1 and "another run is in progress" in cli.stderr
    assert not (out / "provenance.json").exists()


def test_cli_regenerate_forwards_the_upload_options_to_publish(tmp_path, monkeypatch):
    import pipeline.core.build
    import pipeline.hub.publish
    from pipeline.cli import main
    from pipeline.core.build import BuildResult

    seen: dict = {}
    monkeypatch.setattr(pipeline.core.build, "build_release", lambda release, out, **kw: BuildResult(
        out=out, planned=0, built=0, skipped=0, removed=[], counts={"ok": 0}, seconds=0.0))
    monkeypatch.setattr(pipeline.hub.publish, "publish_release", lambda out, repo, **kw: seen.update(kw))
    manifest = write_manifest(tmp_path / "tiny.yaml")
    args = ["regenerate", str(manifest), "--out", str(tmp_path / "release"), "--publish",
            "--allow-delete", "--transfer", "lfs", "--timeout", "7.5"]
    assert main(args) == 0
    assert {k: seen[k] for k in ("allow_delete", "transfer", "timeout")} == {
        "allow_delete": True, "transfer": "lfs", "timeout": 7.5}
    assert main(args[:5]) == 0                    # defaults: no deletes in a foreign repo, the client's path
    assert {k: seen[k] for k in ("allow_delete", "transfer", "timeout")} == {
        "allow_delete": False, "transfer": "auto", "timeout": None}
