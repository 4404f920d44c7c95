"""The filter report: a filtered build end to end, and a synthetic release with
trajectories and rejected thumbnails."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from pipeline.views.report import acceptance, load_release, rejection_causes, save_rejected_thumbnails, write_report
from pipeline.writers.files import filesystem

MANIFEST = {
    "name": "filter-demo", "version": "0.1.0", "seed": 7,
    "source": {"kind": "samples", "images": ["astronaut", "chelsea", "coffee"], "count": 4, "size": 32},
    "shifts": [{"stage": "corruptions", "corruptions": ["contrast", "brightness"], "severities": [1, 5]}],
    "filters": {"chain": [{"filter": "quality", "min_std": 20}, {"filter": "dedup"}]},
    "output": {"formats": ["webdataset"], "samples_per_shard": 4},
}


def shard_keys(release):
    keys = set()
    for tar_path in (release / "data").rglob("*.tar"):
        with tarfile.open(tar_path) as tar:
            keys |= {(tar_path.parent.name, m.name.split(".")[0]) for m in tar.getmembers()}
    return keys


def test_filtered_build_keeps_rejects_out_of_shards_and_reports_them(tmp_path):
    from pipeline.core.build import build_release

    (tmp_path / "m.yaml").write_text(yaml.safe_dump(MANIFEST))
    release = tmp_path / "rel"
    build_release(tmp_path / "m.yaml", release, workers=1)
    samples = pd.read_parquet(release / "samples.parquet")
    rejected = samples[samples["status"] == "rejected"]
    assert len(samples) == 16 and len(rejected) > 0
    assert all(r.startswith("quality_std ") and r.endswith(" < 20") for r in rejected["reason"])
    stored = shard_keys(release)
    assert all((c, k) not in stored for c, k in zip(rejected["config"], rejected["key"]))
    kept = samples[samples["status"] == "ok"]
    assert {(c, k) for c, k in zip(kept["config"], kept["key"])} == stored
    assert all(set(json.loads(s)) >= {"quality_std", "dedup_distance"} for s in samples["scores"])

    done = subprocess.run([sys.executable, "-m", "pipeline", "report", str(release),
                           "--out", str(tmp_path / "report.html")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    markdown = (tmp_path / "report.md").read_text()
    n_ok, n_rej = len(kept), len(rejected)
    assert f"16 samples = {n_ok} kept + {n_rej} rejected + 0 errors (adds up)" in markdown
    assert f"- quality_std: {n_rej}" in markdown
    contrast = samples[samples["config"].str.startswith("contrast")]
    by_level = contrast.assign(level=[json.loads(s)["severity"] for s in contrast["shift"]]).groupby("level")
    rates = (by_level["status"].apply(lambda s: (s == "ok").mean()) * 100).round().astype(int)
    assert f"| contrast | {rates[1]}% | {rates[5]}% |" in markdown
    html = (tmp_path / "report.html").read_text()
    assert "report_files/hist_quality_std.png" in html and "report_files/kept.png" in html
    with Image.open(tmp_path / "report_files" / "hist_quality_std.png") as plot:
        assert plot.size == (500, 300)


def synthetic_release(root):
    """Two trajectories of 3 scales (one broken at scale 1), an error row, a kept tar, thumbnails."""
    rng = np.random.default_rng(0)
    rows, members, rejected = [], {}, []
    reasons = {("t1", 1.0): "clip_class 21.3 < 28.739; dino_ref 0.5 < 0.7812 (0 of 2 passed, need 1)",
               ("t1", 0.0): "incomplete trajectory t1: scale 1.0 rejected",
               ("t1", 2.0): "incomplete trajectory t1: scale 1.0 rejected"}
    for t in ("t0", "t1"):
        for scale in (0.0, 1.0, 2.0):
            key = f"{t}_s{int(scale)}"
            image = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            status = "rejected" if (t, scale) in reasons else "ok"
            scores = {"clip_class": 30.0 + scale if status == "ok" else 21.3, "dino_ref": 0.9 - 0.1 * scale}
            rows.append({"key": key, "config": "snow", "stage": "nuisance", "status": status,
                         "reason": reasons.get((t, scale), ""), "scores": json.dumps(scores),
                         "shift": json.dumps({"shift_name": "heavy snow", "scale": scale, "trajectory": t}),
                         "shard": "data/snow/test-00000.tar" if status == "ok" else None})
            if status == "ok":
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="PNG")
                members[f"{key}.png"] = buffer.getvalue()
            else:
                rejected.append((key, image))
    rows.append({"key": "t2_s0", "config": "snow", "stage": "nuisance", "status": "error",
                 "reason": "nuisance: NaN latents", "scores": "{}", "shard": None,
                 "shift": json.dumps({"shift_name": "heavy snow", "scale": 0.0, "trajectory": "t2"})})
    pd.DataFrame(rows).to_parquet(root / "samples.parquet")
    (root / "data" / "snow").mkdir(parents=True)
    with tarfile.open(root / "data" / "snow" / "test-00000.tar", "w") as tar:
        for name, payload in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    fs, base = filesystem(str(root))
    keys, images = zip(*rejected)
    save_rejected_thumbnails(fs, base, "snow", list(keys), list(images))
    manifest = {"filters": {"chain": [{"filter": "quality"}], "thresholds": {"clip_class": {"min": 28.739}}}}
    counts = {"total": 7, "ok": 3, "rejected": 3, "error": 1}
    document = {"manifest": manifest, "release": {"name": "cns-mini"}, "counts": counts}
    (root / "provenance.json").write_text(json.dumps(document))


def test_report_of_trajectories_counts_rates_causes_and_thumbnails(tmp_path):
    synthetic_release(tmp_path)
    view = load_release(tmp_path)
    assert view.thresholds["clip_class"] == {"min": 28.739}
    assert view.thresholds["quality_std"] == {"min": 2.0, "max": None}  # the quality filter's own default
    table = acceptance(view.samples)
    assert list(table.columns) == ["0.0", "1.0", "2.0"]
    assert table.loc["heavy snow"].tolist() == pytest.approx([1 / 3, 1 / 2, 1 / 2])
    assert rejection_causes(view.samples) == {"incomplete_trajectory": 2, "clip_class": 1, "dino_ref": 1}
    assert sorted(p.name for p in (tmp_path / "rejected" / "snow").iterdir()) == \
        ["t1_s0.jpg", "t1_s1.jpg", "t1_s2.jpg"]

    report = write_report(tmp_path, tmp_path / "out" / "report.html", examples=6)
    assert report.counts == {"total": 7, "ok": 3, "rejected": 3, "error": 1}
    assert sorted(p.name for p in report.images) == ["hist_clip_class.png", "hist_dino_ref.png", "kept.png",
                                                       "rejected.png"]
    markdown = report.markdown.read_text()
    assert "7 samples = 3 kept + 3 rejected + 1 errors (adds up)" in markdown
    assert "| heavy snow | 33% | 50% | 50% |" in markdown
    assert "- clip_class: ≥ 28.739" in markdown
    with Image.open(tmp_path / "out" / "report_files" / "rejected.png") as grid:
        assert grid.size[0] > 600 and np.asarray(grid.convert("L")).std() > 10  # images, not a blank canvas


def test_counts_that_disagree_with_provenance_are_flagged(tmp_path):
    synthetic_release(tmp_path)
    document = json.loads((tmp_path / "provenance.json").read_text())
    document["counts"]["ok"] = 4
    (tmp_path / "provenance.json").write_text(json.dumps(document))
    markdown = write_report(tmp_path, tmp_path / "r.html").markdown.read_text()
    assert "DOES NOT ADD UP" in markdown
    done = subprocess.run([sys.executable, "-m", "pipeline", "report", str(tmp_path / "nothing")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "not a built release" in done.stderr


def test_report_of_a_release_without_rejections(tmp_path, tiny_release):
    from pipeline.core.build import build_release
    from pipeline.core.manifest import parse_release

    tiny_release["output"] = {"samples_per_shard": 5}
    build_release(parse_release(tiny_release), tmp_path / "rel", workers=1)
    report = write_report(tmp_path / "rel", tmp_path / "report.html")
    assert [p.name for p in report.images] == ["kept.png"]
    text = report.markdown.read_text()
    assert "20 samples = 20 kept + 0 rejected + 0 errors (adds up)" in text
