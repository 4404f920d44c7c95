"""Calibration recovers known thresholds from synthetic score distributions and
writes a thresholds file a manifest can include."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.views.calibrate import CalibrationError, calibrate, read_labelled, run_calibration
from stages.filters import FiltersSpec, Rule, Threshold, keep_mask

# out-of-class scores are uniform on [0, top): the 0.9 quantile, i.e. the threshold
# that removes 90 % of them, is 0.9 * top
TOPS = {"clip_class": 32.0, "clip_class_shift": 40.0, "clip_ref": 0.9, "dino_ref": 0.85}


def synthetic_scores(n_in=3000, n_out=3000, seed=0):
    rng = np.random.default_rng(seed)
    in_class = np.r_[np.ones(n_in, bool), np.zeros(n_out, bool)]
    columns = {name: np.r_[rng.uniform(0.8 * top, 1.4 * top, n_in), rng.uniform(0, top, n_out)]
               for name, top in TOPS.items()}
    return columns, in_class


def test_thresholds_recover_the_target_quantile_of_out_of_class_scores():
    columns, in_class = synthetic_scores()
    result = calibrate(columns, in_class, target=0.9, k=2)
    for name, top in TOPS.items():
        assert result["thresholds"][name] == pytest.approx(0.9 * top, rel=0.02)
        metrics = result["metrics"][name]
        assert metrics["tpr"] == pytest.approx(0.9, abs=0.002)  # the score alone removes 90 % of out-of-class
        # in-class is uniform on [0.8 top, 1.4 top): the share below 0.9 top is 1/6
        assert metrics["fpr"] == pytest.approx(1 / 6, abs=0.03)
    assert result["rule"] == {"kind": "k_of_n", "k": 2, "of": list(TOPS)}
    limits = {n: Threshold(min=v) for n, v in result["thresholds"].items()}
    keep = keep_mask(columns, limits, Rule(**result["rule"]))
    combined = result["metrics"]["combined"]
    assert combined["tpr"] == pytest.approx(float((~keep[~in_class]).mean()))
    assert combined["fpr"] == pytest.approx(float((~keep[in_class]).mean()))
    assert combined["accuracy"] == pytest.approx(float((keep == in_class).mean()))
    # independent scores: an out-of-class row survives 2-of-4 with P = 1 - P(<=1 pass) at p = 0.1 each
    assert combined["tpr"] == pytest.approx(0.9**4 + 4 * 0.1 * 0.9**3, abs=0.02)


def test_cli_writes_an_includable_thresholds_file(tmp_path):
    columns, in_class = synthetic_scores(400, 400, seed=1)
    table = pd.DataFrame({"key": [f"k{i}" for i in range(800)],
                          "label": np.where(in_class, "in", "out"), **columns})
    table.to_csv(tmp_path / "labelled.csv", index=False)
    out = tmp_path / "thresholds.yaml"
    done = subprocess.run([sys.executable, "-m", "pipeline", "calibrate", str(tmp_path / "labelled.csv"),
                           "--target-tpr", "0.9", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "combined" in done.stdout and "2 of 4" in done.stdout
    written = yaml.safe_load(out.read_text())
    assert set(written) == {"thresholds", "rule", "calibration"}
    assert written["calibration"]["in_class"] == 400 and written["calibration"]["target_tpr"] == 0.9
    (tmp_path / "clip").mkdir()
    (tmp_path / "dino").mkdir()
    model = lambda name: str(tmp_path / ("dino" if name == "dino_ref" else "clip"))
    chain = [{"filter": name, "model": model(name)} for name in TOPS]
    spec = FiltersSpec.model_validate({"include": str(out), "chain": chain})
    assert spec.rule == Rule(kind="k_of_n", k=2, of=list(TOPS))
    assert spec.thresholds == {n: Threshold(min=v) for n, v in written["thresholds"].items()}
    assert written["thresholds"]["clip_class"] == pytest.approx(0.9 * TOPS["clip_class"], rel=0.05)


def test_release_keys_take_their_scores_from_samples_parquet(tmp_path):
    rows = [{"key": f"k{i}", "scores": json.dumps({"clip_class": float(i)})} for i in range(20)]
    (tmp_path / "rel").mkdir()
    pd.DataFrame(rows).to_parquet(tmp_path / "rel" / "samples.parquet")
    labels = pd.DataFrame({"key": [f"k{i}" for i in range(20)], "label": ["out"] * 10 + ["in"] * 10})
    labels.to_csv(tmp_path / "labelled.csv", index=False)
    result = run_calibration(tmp_path / "labelled.csv", ["clip_class"], 0.9, 2, tmp_path / "t.yaml",
                             release=str(tmp_path / "rel"))
    assert result["thresholds"] == {"clip_class": pytest.approx(8.1)}  # 0.9 quantile of 0..9
    assert result["metrics"]["clip_class"] == {"threshold": 8.1, "tpr": 0.9, "fpr": 0.0, "accuracy": 0.95}


def test_bad_labelled_sets_are_refused_with_the_reason(tmp_path):
    cases = {"label,score\nin,1\n": "expected columns", "key,label\na,maybe\n": "labels must be in/out",
             "key,label\na,in\nb,in\n": "both in-class and out-of-class"}
    for i, (text, message) in enumerate(cases.items()):
        (tmp_path / f"{i}.csv").write_text(text)
        with pytest.raises(CalibrationError, match=message):
            read_labelled(tmp_path / f"{i}.csv")
    (tmp_path / "ok.csv").write_text("key,label\na,in\nb,out\n")
    done = subprocess.run([sys.executable, "-m", "pipeline", "calibrate", str(tmp_path / "ok.csv"),
                           "--out", str(tmp_path / "t.yaml")], capture_output=True, text=True)
    assert done.returncode == 2
    assert "pass --release DIR" in done.stderr
