"""Slider training (Concept Sliders objective) on a tiny model, through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny_models import tiny_pipeline_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("sliders")
    cmd = [
        sys.executable,
        "-m",
        "pipeline",
        "train-slider",
        "--model",
        str(tiny_pipeline_dir()),
        "--class",
        "goldfish",
        "--shift",
        "heavy snow",
        "--out",
        str(out),
        "--steps",
        "8",
        "--batch-size",
        "2",
        "--resolution",
        "32",
        "--denoise-steps",
        "4",
        "--lr",
        "0.01",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, json.loads(proc.stdout), proc.stderr


def test_cli_writes_adapter_and_provenance(trained):
    out, summary, stderr = trained
    path = out / "goldfish-heavy_snow.safetensors"
    assert summary["slider"] == str(path) and path.is_file()
    meta = json.loads(path.with_suffix(".json").read_text())
    assert (
        meta["adapter_sha256"]
        == summary["sha256"]
        == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    )
    assert meta["prompts"] == {
        "target": "a picture of a goldfish",
        "neutral": "a picture of a goldfish",
        "positive": "goldfish, in heavy snow",
        "unconditional": "",
    }
    settings = meta["settings"]
    assert (settings["rank"], settings["alpha"], settings["eta"], settings["steps"]) == (4, 1.0, 4.0, 8)
    assert settings["optimizer"] == "AdamW"
    assert len(meta["base_model"]["unet_sha256"]) == 64
    assert "step 8/8 loss" in stderr


def test_probe_loss_decreases(trained):
    _, summary, _ = trained
    probe = summary["probe_loss"]
    assert probe["after"] < 0.9 * probe["before"], probe


def test_saved_slider_loads_and_targets_no_cross_attention(trained):
    from stages.generative.models import load_fresh_model
    from stages.generative.slider_training import slider_target_modules
    from stages.generative.sliders import ensure_slider_loaded, lora_layers, read_slider

    out, _, _ = trained
    model = load_fresh_model(str(tiny_pipeline_dir()), None, "cpu", "float32")
    targets = slider_target_modules(model.unet)
    assert targets and not any(".attn2." in t or t.startswith("time_embedding") for t in targets)
    assert any(".attn1.to_q" in t for t in targets) and any("resnets.0.conv1" in t for t in targets)
    slider = read_slider(out / "goldfish-heavy_snow.safetensors")
    adapter = ensure_slider_loaded(model, slider)
    layers = lora_layers(model.unet, adapter)
    assert len(layers) == len(targets)
    assert (
        max(float(layer.lora_B[adapter].weight.abs().max()) for layer in layers) > 0
    )  # it learned something


def test_missing_model_is_a_usage_error(tmp_path, capsys):
    from pipeline.cli import main

    code = main(
        [
            "train-slider",
            "--model",
            str(tmp_path / "absent"),
            "--class",
            "goldfish",
            "--shift",
            "fog",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "train-slider --model" in capsys.readouterr().err
