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
    return out, {**json.loads(proc.stdout), "argv": cmd[2:]}, proc.stderr


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
    # CNS-Bench's training prompts and x_t guidance
    assert meta["prompts"] == {
        "target": "goldfish",
        "neutral": "goldfish",
        "positive": "goldfish, in heavy snow",
        "unconditional": "goldfish",
    }
    settings = meta["settings"]
    assert (settings["rank"], settings["alpha"], settings["eta"], settings["steps"]) == (4, 1.0, 4.0, 8)
    assert (settings["sample_guidance"], meta["target_set"]) == (7.5, "cns")
    assert settings["optimizer"] == "AdamW"
    assert len(meta["base_model"]["unet_sha256"]) == 64
    assert "step 8/8 loss" in stderr


def read_header(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return fh.metadata()


@pytest.mark.slow
def test_two_identical_runs_write_identical_slider_bytes(trained, tmp_path):
    out, summary, _ = trained
    cmd = [sys.executable, "-m", "pipeline", *summary["argv"][1:]]
    again = [*cmd[: cmd.index("--out") + 1], str(tmp_path), *cmd[cmd.index("--out") + 2 :]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(again, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    name = "goldfish-heavy_snow.safetensors"
    assert (tmp_path / name).read_bytes() == (out / name).read_bytes()


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
    assert targets == slider_target_modules(model.unet, "cns")
    assert not any(".proj_in" in t or ".ff." in t for t in targets)
    header = read_header(out / "goldfish-heavy_snow.safetensors")
    written = json.loads(header["lora_adapter_metadata"])["unet.target_modules"]  # peft's shortest suffixes
    assert written == sorted(written) and all(any(t.endswith(w) for w in written) for t in targets)
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


# --- sliders trained by a build: one Dask task per slider, before planning ------------------------

TRAIN = {"batch_size": 1, "resolution": 32, "denoise_steps": 2, "lr": 0.01}
SLIDER_ID = "nuisance/slider/heavy_snow/goldfish"


def slider_release(path: Path, steps: int):
    from pipeline.core.manifest import parse_release

    return parse_release(
        {
            "name": "cns-train-tiny",
            "version": "0.0.1",
            "seed": 5,
            "source": {"kind": "prompts", "classes": ["goldfish"], "seeds": [0]},
            "shifts": [
                {
                    "stage": "nuisance",
                    "model": str(tiny_pipeline_dir()),
                    "device": "cpu",
                    "steps": 2,
                    "scales": [0.0, 2.0],
                    "sliders": [
                        {
                            "shift": "heavy snow",
                            "class_name": "goldfish",
                            "path": str(path),
                            "train": {"steps": steps, **TRAIN},
                        }
                    ],
                }
            ],
            "output": {"samples_per_shard": 2},
        }
    )


@pytest.fixture(scope="module")
def scheduler():
    """One single-process-worker cluster shared by the builds below (as a remote scheduler would be)."""
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def test_build_trains_the_slider_once_and_retrains_when_settings_change(tmp_path, scheduler):
    import hashlib

    import pyarrow.parquet as pq

    from pipeline.core.build import build_release

    slider = tmp_path / "sliders" / "goldfish-snow.safetensors"
    out = tmp_path / "release"
    events: list[str] = []
    first = build_release(slider_release(slider, 2), out, scheduler=scheduler, on_event=events.append)
    assert first.prepared == [SLIDER_ID] and f"prepared {SLIDER_ID} -> {slider}" in events
    assert first.counts == {"total": 2, "ok": 2, "rejected": 0, "error": 0}
    sha = hashlib.sha256(slider.read_bytes()).hexdigest()
    training = json.loads(slider.with_suffix(".json").read_text())
    assert training["settings"]["steps"] == 2 and training["adapter_sha256"] == sha
    assert training["prompts"]["positive"] == "goldfish, in heavy snow"
    shifts = [json.loads(r["shift"]) for r in pq.read_table(out / "samples.parquet").to_pylist()]
    assert {s["slider_sha256"] for s in shifts} == {sha}  # the trajectories used the trained slider
    prov = json.loads((out / "provenance.json").read_text())
    [prepared] = prov["preparations"]
    assert (prepared["id"], prepared["output"], prepared["sha256"]) == (SLIDER_ID, str(slider), sha)
    assert prepared["fingerprint"] == training["training_fingerprint"]
    assert prepared["training"]["base_model"]["unet_sha256"] == training["base_model"]["unet_sha256"]
    assert prov["stages"][0]["weights"]["slider/heavy_snow/goldfish/goldfish-snow.safetensors"] == sha

    mtime = slider.stat().st_mtime_ns
    again = build_release(slider_release(slider, 2), out, scheduler=scheduler)
    assert (again.prepared, again.built, again.skipped) == ([], 0, 1)
    assert slider.stat().st_mtime_ns == mtime and hashlib.sha256(slider.read_bytes()).hexdigest() == sha

    longer = build_release(slider_release(slider, 3), out, scheduler=scheduler)
    assert longer.prepared == [SLIDER_ID] and longer.built == 1  # a new slider: its shards rebuild
    assert json.loads(slider.with_suffix(".json").read_text())["settings"]["steps"] == 3
    new_sha = hashlib.sha256(slider.read_bytes()).hexdigest()
    assert new_sha != sha
    assert json.loads((out / "provenance.json").read_text())["preparations"][0]["sha256"] == new_sha


def test_preparation_fingerprint_follows_the_training_inputs(tmp_path):
    from stages.nuisance import NuisanceStage

    def preparation(path, steps):
        [prep] = NuisanceStage(slider_release(path, steps).shifts[0]).preparations()
        return prep

    base = preparation(tmp_path / "a.safetensors", 2)
    assert base.id == SLIDER_ID and base.resources == {} and not base.is_current()
    assert preparation(tmp_path / "elsewhere" / "a.safetensors", 2).fingerprint == base.fingerprint
    assert preparation(tmp_path / "a.safetensors", 3).fingerprint != base.fingerprint
    # a slider that a build would train does not stop `plan` before it exists
    stage = NuisanceStage(slider_release(tmp_path / "a.safetensors", 2).shifts[0])
    assert stage.weight_hashes()["slider/heavy_snow/goldfish/a.safetensors"] == "untrained"


def test_training_needs_a_class(tmp_path):
    from pydantic import ValidationError

    from stages.nuisance import NuisanceParams

    with pytest.raises(ValidationError, match=r"sliders\[0\].train needs class_name"):
        NuisanceParams(
            stage="nuisance",
            model=str(tmp_path),
            sliders=[{"shift": "fog", "path": "fog.safetensors", "train": {"steps": 1}}],
        )


def test_failed_preparation_names_itself_and_bad_model_is_bad_input(tmp_path, scheduler):
    import functools

    from dask.distributed import Client

    from pipeline.core.manifest import ManifestError
    from pipeline.core.preparations import PreparationError, release_preparations, run_preparations
    from stages.base import Preparation

    broken = Preparation(
        id="test/broken", output=str(tmp_path / "x.bin"), fingerprint="f" * 64,
        run=functools.partial(int, "not a number"), record=lambda: None,
    )
    with Client(scheduler, set_as_default=False) as client:
        with pytest.raises(PreparationError, match=r"preparation test/broken .* failed: ValueError"):
            run_preparations(lambda: client, [broken], lambda msg: None)
    release = slider_release(tmp_path / "a.safetensors", 2)
    shifts = [release.shifts[0].model_copy(update={"model": str(tmp_path / "absent")})]
    with pytest.raises(ManifestError, match=r"shifts.0 \(nuisance\): nuisance.model: .*not a local folder"):
        release_preparations(release.model_copy(update={"shifts": shifts}))


def test_x_t_is_reached_with_cfg_against_the_unconditional_prompt(tmp_path):
    """CNS-Bench denoises to x_t with CFG between the unconditional and target prompts, which
    are both the class phrase: guidance then changes nothing. Against "" it would."""
    import torch

    from stages.generative.models import load_fresh_model
    from stages.generative.sampling import encode_prompts
    from stages.generative.slider_training import SliderTrainingConfig, noisy_latents

    model = load_fresh_model(str(tiny_pipeline_dir()), None, "cpu", "float32")

    def x_t(guidance, unconditional="{class}"):
        cfg = SliderTrainingConfig(model="m", class_name="goldfish", shift="snow", out_dir=tmp_path, resolution=32,
                                   denoise_steps=6, sample_guidance=guidance, unconditional_prompt=unconditional)
        embeds = {k: encode_prompts(model, [v]) for k, v in cfg.prompts().items()}
        return noisy_latents(model, cfg, embeds, torch.Generator().manual_seed(5), 1)

    (cns, t), (unguided, t1) = x_t(7.5), x_t(1.0)
    assert t == t1 and cns.shape == (1, 4, 16, 16)
    torch.testing.assert_close(cns, unguided, rtol=0, atol=1e-5)
    empty, _ = x_t(7.5, unconditional="")
    assert (empty - cns).abs().max() > 1e-3
    assert SliderTrainingConfig(model="m", class_name="goldfish", shift="heavy snow", out_dir=tmp_path).prompts() == {
        "target": "goldfish", "neutral": "goldfish", "positive": "goldfish, in heavy snow", "unconditional": "goldfish"}
