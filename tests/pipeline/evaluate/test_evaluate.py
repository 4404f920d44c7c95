"""`shiftforge evaluate` end to end: a labelled release of tiny shapes, the tiny shape CNNs
saved as TorchScript / torch.export programs, predictions checked against a plain
PyTorch loop over the same shards, resume, baselines, bad input, and the CLI."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.evaluate import EvalOptions, evaluate_release, parse_model
from tests.pipeline.release_fixtures import build_tiny_release
from tests.tiny_classifiers import classifier_spec, predict, save_exported, save_scripted, shapes, train_shape_cnns

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CORRUPTIONS = ["gaussian_noise", "contrast"]


@pytest.fixture(scope="module")
def shapes_release(tmp_path_factory):
    """12 labelled 32 px shapes (folder source, classes circle/square/triangle) × 2 corruptions × 2
    severities, 6 per shard, plus the two shape CNNs as spec files."""
    root = tmp_path_factory.mktemp("evaluate")
    images, classes = shapes(12, seed=5)
    names = ["circle", "square", "triangle"]
    for i, (image, cls) in enumerate(zip(images, classes)):
        folder = root / "images" / names[cls]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    release = build_tiny_release(root, source={"kind": "folder", "path": str(root / "images")},
                                 shifts=[{"stage": "corruptions", "corruptions": CORRUPTIONS, "severities": [1, 5]}],
                                 output={"formats": ["webdataset"], "samples_per_shard": 6})
    nets = train_shape_cnns({"alpha": 3, "beta": 4})
    specs = {}
    for name, save, suffix in (("alpha", save_scripted, ".pt"), ("beta", save_exported, ".pt2")):
        model_file = save(nets[name], root / f"{name}{suffix}")
        specs[name] = root / f"{name}.json"
        specs[name].write_text(json.dumps(classifier_spec(Path(model_file.name), name)))
    return release, nets, specs


def run_evaluate(release, spec, out, **kwargs):
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        return evaluate_release(release, [parse_model(str(spec))], out, scheduler=cluster.scheduler_address,
                                options=EvalOptions(batch_size=4), **kwargs)


def plain_loop(release: Path, net) -> dict[tuple[str, str], int]:
    """Reference: every shard read with tarfile + PIL, one forward pass per shard."""
    predictions = {}
    for tar_path in sorted((release / "data").glob("*/*.tar")):
        with tarfile.open(tar_path) as tar:
            members = sorted((m for m in tar.getmembers() if m.name.endswith(".png")), key=lambda m: m.name)
            keys = [(tar_path.parent.name, m.name[:-4]) for m in members]
            images = [np.asarray(Image.open(tar.extractfile(m))) for m in members]
        predictions.update(zip(keys, predict(net, images).tolist()))
    return predictions


@pytest.fixture(scope="module")
def evaluated(shapes_release, tmp_path_factory):
    release, nets, specs = shapes_release
    out = tmp_path_factory.mktemp("results")
    [path] = run_evaluate(release, specs["alpha"], out)
    return out, json.loads(path.read_text())


def test_predictions_match_a_plain_pytorch_loop_and_metrics_follow(shapes_release, evaluated):
    release, nets, _ = shapes_release
    out, document = evaluated
    table = pq.read_table(out / "results" / "alpha.predictions.parquet").to_pylist()
    expected = plain_loop(release, nets["alpha"])
    assert len(table) == len(expected) == 48
    assert {(r["config"], r["key"]): r["topk_index"][0] for r in table} == expected
    assert all(len(r["topk_index"]) == 3 and abs(sum(r["topk_score"]) - 1) < 1e-5 for r in table)
    truth = {(r["config"], r["key"]): r["target"] for r in table}
    errors = document["metrics"]["imagenet_c"]["errors"]
    for corruption in CORRUPTIONS:
        for severity in (1, 5):
            keys = [(r["config"], r["key"]) for r in table if r["config"] == f"{corruption}-{severity}"]
            wrong = np.mean([expected[k] != truth[k] for k in keys])
            assert errors[corruption][str(severity)] == pytest.approx(wrong)
    assert document["labelled"] == 48 and document["model"]["weights_sha256"]["alpha.pt"]
    assert document["run"]["shards_run"] == 8
    assert (out / "results" / "alpha-imagenet_c.png").stat().st_size > 1000


def test_rerun_resumes_and_a_damaged_part_is_redone(shapes_release, evaluated):
    release, _, specs = shapes_release
    out, first = evaluated
    [path] = run_evaluate(release, specs["alpha"], out)
    assert json.loads(path.read_text())["run"]["shards_run"] == 0
    part = out / ".evaluate" / "alpha" / "parts" / "contrast-5" / "test-00001.parquet"
    intact = part.read_bytes()
    part.write_bytes(intact[:-10])
    [path] = run_evaluate(release, specs["alpha"], out)
    again = json.loads(path.read_text())
    assert again["run"]["shards_run"] == 1
    assert part.read_bytes() == intact                  # deterministic on CPU: the same bytes again
    assert again["metrics"] == first["metrics"]


def test_fingerprints_follow_weights_and_options_not_paths(shapes_release, tmp_path):
    import shutil

    from pipeline.evaluate.runner import plan_units
    from pipeline.evaluate.shards import read_provenance, release_shards

    release, _, specs = shapes_release
    shards = release_shards(read_provenance(release))
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(specs["alpha"].parent / "alpha.pt", moved / "alpha.pt")
    shutil.copy(specs["alpha"], moved / "alpha.json")
    prints = lambda spec, **o: [u.fingerprint for u in plan_units(shards, parse_model(str(spec)),  # noqa: E731
                                                                   EvalOptions(**o))]
    assert prints(specs["alpha"]) == prints(moved / "alpha.json")
    assert prints(specs["alpha"]) != prints(specs["alpha"], topk=3)
    assert prints(specs["alpha"]) != prints(specs["alpha"], batch_size=8)
    (moved / "alpha.pt").write_bytes((moved / "alpha.pt").read_bytes() + b"\0")
    assert prints(specs["alpha"]) != prints(moved / "alpha.json")


def test_a_second_model_is_normalised_by_the_baseline(shapes_release, evaluated, tmp_path):
    release, _, specs = shapes_release
    out, base = evaluated
    [path] = run_evaluate(release, specs["beta"], tmp_path, baseline=out / "results" / "alpha.json")
    result = json.loads(path.read_text())["metrics"]["imagenet_c"]
    assert json.loads(path.read_text())["baseline"]["model"] == "alpha"
    base_errors = base["metrics"]["imagenet_c"]["errors"]
    for corruption in CORRUPTIONS:
        ours = sum(result["errors"][corruption].values())
        theirs = sum(base_errors[corruption].values())
        assert result["ce"][corruption] == (pytest.approx(ours / theirs) if theirs else None)


def test_clean_source_gives_the_clean_error_and_relative_mce(shapes_release, tmp_path):
    release, nets, specs = shapes_release
    [base_path] = run_evaluate(release, specs["alpha"], tmp_path / "a", clean_source=True)
    [path] = run_evaluate(release, specs["beta"], tmp_path / "b", clean_source=True, baseline=base_path)
    base, ours = (json.loads(p.read_text())["metrics"]["imagenet_c"] for p in (base_path, path))
    images, classes = shapes(12, seed=5)          # the folder source's images and their classes
    for name, result in (("alpha", base), ("beta", ours)):
        assert result["clean_error"] == pytest.approx(np.mean(predict(nets[name], images) != classes))
    for corruption in CORRUPTIONS:
        mine, theirs = ours["errors"][corruption], base["errors"][corruption]
        denominator = sum(theirs[s] - base["clean_error"] for s in ("1", "5"))
        expected = sum(mine[s] - ours["clean_error"] for s in ("1", "5")) / denominator if denominator else None
        assert ours["relative_ce"].get(corruption) == (None if expected is None else pytest.approx(expected))
    clean = json.loads(path.read_text())["per_config"]["clean"]
    assert clean == {"stage": "source", "n": 12, "labelled": 12, "accuracy": pytest.approx(1 - ours["clean_error"])}


def test_bad_input_exits_2_with_one_line_and_writes_nothing(shapes_release, tmp_path, capsys):
    release, _, specs = shapes_release
    out = tmp_path / "out"
    cases = [[str(tmp_path), "--model", str(specs["alpha"])],                         # not a release
             [str(release), "--model", str(tmp_path / "missing.pt")],                  # no such model
             [str(release), "--model", str(specs["alpha"].parent / "alpha.pt")],       # TorchScript, no spec
             [str(release), "--model", str(specs["alpha"]), "--baseline", str(specs["beta"])],  # not results
             [str(release), "--model", str(specs["alpha"]), "--configs", "fog-3"]]     # unknown config
    for argv in cases:
        assert main(["evaluate", *argv, "--out", str(out), "--workers", "1"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err
        assert not out.exists()


def test_a_model_that_fails_on_the_worker_exits_1_with_one_line(shapes_release, tmp_path, capsys):
    from dask.distributed import LocalCluster

    release, _, specs = shapes_release
    broken = json.loads(specs["alpha"].read_text()) | {"input_size": [16, 16], "name": "broken"}
    spec = specs["alpha"].parent / "broken.json"              # beside alpha.pt: relative path resolves
    spec.write_text(json.dumps(broken))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        code = main(["evaluate", str(release), "--model", str(spec), "--out", str(tmp_path),
                     "--scheduler", cluster.scheduler_address, "--configs", "contrast-1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("evaluate failed: RuntimeError") and len(err[-1]) < 800
    log = tmp_path / ".evaluate" / "error.log"
    assert f"(details: {log})" in err[-1] and "Traceback" in log.read_text()
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_cli_builds_the_demo_and_evaluates_a_transformers_classifier(tmp_path):
    """From a fresh process: `build manifests/demo.yaml` then `evaluate` with a tiny saved model."""
    import subprocess
    import sys

    model = tmp_path / "tiny-resnet"
    save_tiny_transformers_classifier(model)
    root = Path(__file__).resolve().parents[3]
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    build = [sys.executable, "-m", "pipeline", "build", str(root / "manifests" / "demo.yaml"),
             "--out", str(tmp_path / "release"), "--workers", "1", "--no-progress"]
    assert subprocess.run(build, env=env, capture_output=True, timeout=300).returncode == 0
    run = subprocess.run([sys.executable, "-m", "pipeline", "evaluate", str(tmp_path / "release"), "--model",
                          str(model), "--workers", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    document = json.loads((tmp_path / "release" / "results" / "tiny-resnet.json").read_text())
    assert document["samples"] == 342 and document["labelled"] == 0 and document["notes"]
    assert pq.read_table(tmp_path / "release" / "results" / "tiny-resnet.predictions.parquet").num_rows == 342


def test_a_multilabel_transformers_model_keeps_every_sigmoid_probability(tmp_path):
    import torch
    from transformers import AutoModelForImageClassification

    from pipeline.evaluate.models import predictor_for

    model_dir = save_tiny_transformers_classifier(tmp_path / "multi", problem_type="multi_label_classification")
    model = parse_model(str(model_dir))
    assert model.multilabel and model.describe()["multilabel"]
    images = [np.full((32, 32, 3), v, np.uint8) for v in (0, 128)]
    [first, _] = predictor_for(model, "cpu", topk=1)(images)
    net = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        x = (torch.from_numpy(images[0]).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.25
        expected = torch.sigmoid(net(pixel_values=x).logits)[0]
    assert sorted(first["topk_index"]) == [0, 1, 2]                   # every label, not the top 1
    stored = dict(zip(first["topk_index"], first["topk_score"]))
    assert [stored[i] for i in range(3)] == pytest.approx(expected.tolist(), abs=1e-6)


def save_tiny_transformers_classifier(out: Path, **config_extra) -> Path:
    """A 2-stage ResNet with 3 labels and a preprocessor config, saved as safetensors."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=3,
                          id2label={0: "circle", 1: "square", 2: "triangle"},
                          label2id={"circle": 0, "square": 1, "triangle": 2}, **config_extra)
    ResNetForImageClassification(config).eval().save_pretrained(out, safe_serialization=True)
    (out / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"height": 32, "width": 32}, "image_mean": [0.5] * 3, "image_std": [0.25] * 3, "do_normalize": True}))
    return out


def test_results_in_the_release_reach_the_card_the_report_and_publish(shapes_release, evaluated, tmp_path):
    from pipeline.hub.publish import collect_release_files
    from pipeline.views.report import write_report

    release, _, specs = shapes_release
    _, document = evaluated
    run_evaluate(release, specs["alpha"], None)              # results/ inside the release
    errors = document["metrics"]["imagenet_c"]["errors"]
    mean = np.mean([e for by_severity in errors.values() for e in by_severity.values()])
    line = f"| alpha | imagenet_c | mean corruption error {100 * mean:.1f}%, clean error –, mCE –"
    assert line in (release / "README.md").read_text()
    report = write_report(release, tmp_path / "report.html")
    assert line in report.markdown.read_text()
    assert "<h2>Results</h2>" in report.html.read_text()
    _, files = collect_release_files(release)
    uploaded = {f.path for f in files}
    assert {"results/alpha.json", "results/alpha.predictions.parquet", "results/alpha-imagenet_c.png"} <= uploaded
    assert not any(".evaluate" in path for path in uploaded)
