"""RAID's setting: single-logit AI-image detectors, only fakes attacked towards "real", detection
metrics per detector and generator; preprocessing as the detectors were trained."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from stages.adversarial.detection import average_precision, detection_metrics, f1, roc_auc  # noqa: E402
from stages.adversarial.models import Classifier  # noqa: E402
from stages.adversarial.preprocessing import (  # noqa: E402
    Preprocessing,
    center_crop,
    from_processor_config,
    shortest_edge_size,
)
from stages.adversarial.transfer import transfer_summary  # noqa: E402
from tests.tiny_classifiers import save_scripted  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_detection_metrics_exact_small_cases():
    truth = [1, 1, 0, 0, 1]
    score = [0.9, 0.4, 0.4, 0.2, 0.7]
    # pairs (pos, neg): 0.9>0.4, 0.9>0.2, 0.4=0.4 (½), 0.4>0.2, 0.7>0.4, 0.7>0.2 -> 5.5 / 6
    assert roc_auc(np.array(truth), np.array(score)) == pytest.approx(5.5 / 6)
    # thresholds 0.9: P=1 R=1/3; 0.7: P=1 R=2/3; 0.4: P=3/4 R=1 -> 1/3 + 1/3 + 1/3·3/4
    assert average_precision(np.array(truth), np.array(score)) == pytest.approx(1 / 3 + 1 / 3 + 0.25)
    assert f1(np.array(truth), np.array([1, 0, 1, 0, 1])) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    metrics = detection_metrics([bool(t) for t in truth], score, [s > 0.5 for s in score])
    assert metrics["accuracy"] == pytest.approx(0.8) and metrics["positives"] == 3
    # RAID scores thresholded predictions: [1,0,0,0,1] -> AUC (2·2 + 1·2·½)/6
    assert metrics["auc_thresholded"] == pytest.approx(5 / 6, abs=1e-6)
    assert roc_auc(np.array([1, 1]), np.array([0.2, 0.3])) is None


def row(label, target, clean, adv, attacked=True):
    record = {"clean": clean, "adversarial": adv, "success": adv == target}
    return {"config": "c", "status": "ok", "shift": {"label_index": label, "target_index": target,
                                                     "attacked": attacked, "achieved_linf": 0.1,
                                                     "achieved_l2": 1.0, "on_surrogates": {"m": record},
                                                     "on_held_out": {}}}


def test_targeted_rates_exclude_samples_already_in_the_target_class():
    rows = [row(0, 0, 0, 0), row(0, 0, 0, 0), row(1, 0, 1, 0), row(1, 0, 1, 1), row(2, 0, 2, 2, attacked=False)]
    rates = transfer_summary(rows)["configs"]["c"]
    assert rates["attacked"] == 4 and rates["counts"]["ok"] == 5
    m = rates["surrogates"]["m"]
    assert m["success_rate"] == 0.75                       # raw: two samples were already "real"
    assert m["success_rate_off_target"] == 0.5 and m["samples_off_target"] == 2
    assert m["samples"] == 4                               # the unattacked sample is not a trial


def test_hf_processor_semantics_match_transformers():
    from transformers.image_transforms import center_crop as hf_center_crop
    from transformers.image_transforms import get_resize_output_image_size

    for height, width in ((30, 50), (50, 30), (33, 33)):
        image = np.zeros((height, width, 3), np.uint8)
        assert shortest_edge_size(height, width, 24) == get_resize_output_image_size(
            image, 24, default_to_square=False, input_data_format="channels_last")
    grid = np.arange(3 * 9 * 12, dtype=np.float32).reshape(3, 9, 12)
    for size in ((4, 5), (6, 6), (11, 14)):
        ours = center_crop(torch.from_numpy(grid)[None], size, "floor")[0].numpy()
        theirs = hf_center_crop(grid, size, data_format="channels_first", input_data_format="channels_first")
        assert np.array_equal(ours, theirs), size
    # torchvision's CenterCrop: top = round((h - ch) / 2) -> (9 - 4) / 2 = 2.5 -> 2 (half to even)
    assert center_crop(torch.from_numpy(grid)[None], (4, 5), "round")[0, 0, 0, 0] == grid[0, 2, 4]


def test_processor_configs_become_the_trained_pipeline():
    clip = {"do_resize": True, "size": {"shortest_edge": 40}, "do_center_crop": True,
            "crop_size": {"height": 32, "width": 32}, "resample": 3, "image_mean": [0.5] * 3,
            "image_std": [0.25] * 3}
    declared = from_processor_config(clip)
    assert declared == {"resize": "shortest_edge", "size": 40, "crop": (32, 32), "crop_rounding": "floor",
                        "interpolation": "bicubic", "mean": (0.5,) * 3, "std": (0.25,) * 3}
    assert from_processor_config({"do_resize": False, "do_normalize": False})["resize"] == "none"
    with pytest.raises(ValueError, match="resample=1"):
        from_processor_config({"resample": 1})
    prep = Preprocessing(resize="shortest_edge", size=40, crop=(32, 32), crop_rounding="floor",
                         interpolation="bicubic", mean=(0.0,), std=(1.0,), channels=3)
    assert prep(torch.rand(2, 3, 60, 90)).shape == (2, 3, 32, 32)  # 60×90 -> 40×60 -> crop
    keep = Preprocessing(resize="none", size=None, crop=None, crop_rounding="round", interpolation="bilinear",
                         mean=(0.0,), std=(1.0,), channels=3)
    x = torch.rand(1, 3, 17, 23)
    assert torch.equal(keep(x), x)


def brightness_detector(weight: float = 10.0) -> torch.nn.Module:
    """One logit, positive ("fake") when the mean pixel is above 0.5."""
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 1))
    with torch.no_grad():
        net[-1].weight.fill_(weight / 3)
        net[-1].bias.fill_(-weight / 2)
    return net.eval()


def test_single_logit_reads_as_minus_x_plus_x_in_the_source_order():
    prep = Preprocessing(resize="none", size=None, crop=None, crop_rounding="round", interpolation="bilinear",
                         mean=(0.0,), std=(1.0,), channels=3)
    model = Classifier("d", brightness_detector(), prep, ["real", "fake"], single_logit=True)
    x = torch.full((1, 3, 8, 8), 0.8)
    assert model(x)[0].tolist() == pytest.approx([-3.0, 3.0])
    model.align_labels(["fake", "real"])   # a folder source sorts fake before real
    assert model(x)[0].tolist() == pytest.approx([3.0, -3.0])


@pytest.fixture(scope="module")
def raid_release(tmp_path_factory):
    from pipeline.core.build import build_release
    from pipeline.core.manifest import parse_release

    root = tmp_path_factory.mktemp("raid")
    rng = np.random.default_rng(0)
    folders = {"real": 0.40, "fake/genA": 0.56, "fake/genB": 0.60}
    for folder, level in folders.items():
        (root / "clean" / folder).mkdir(parents=True)
        for i in range(3):
            pixels = np.clip(level + rng.normal(0, 0.03, (24, 24, 3)), 0, 1)
            Image.fromarray(np.rint(pixels * 255).astype(np.uint8)).save(root / "clean" / folder / f"{i}.png")
    save_scripted(brightness_detector(10.0), root / "d1.pt")
    save_scripted(brightness_detector(6.0), root / "d2.pt")
    detector = {"labels": ["real", "fake"], "single_logit": True, "resize": "none", "mean": [0.0], "std": [1.0]}
    release = parse_release({
        "name": "raid-tiny", "version": "0.0.1", "seed": 1,
        "source": {"kind": "folder", "path": str(root / "clean")},
        "shifts": [{"stage": "adversarial", "surrogates": [{"path": str(root / "d1.pt"), **detector}],
                    "held_out": [{"path": str(root / "d2.pt"), "crop": [16, 16], **detector}],
                    "epsilons": [16], "steps": 10, "step_size": 4, "target": "real",
                    "attack_classes": ["fake"], "positive_class": "fake", "clean_config": True}],
        "output": {"formats": ["webdataset"], "samples_per_shard": 9, "encoding": "png"}})
    build_release(release, root / "out", workers=1)
    return root


def test_raid_like_build_attacks_only_fakes_and_reports_detection_metrics(raid_release):
    provenance = json.loads((raid_release / "out" / "provenance.json").read_text())
    summary = provenance["extras"]["adversarial"]["configs"]["pgd-treal-linf-eps16"]
    assert summary["attacked"] == 6 and summary["counts"]["ok"] == 9
    surrogate = summary["surrogates"]["d1"]
    # ε = 16/255 moves a mean of 0.56 (genA) below the 0.5 boundary, not one of 0.60 (genB)
    assert surrogate["clean_accuracy"] == 1.0 and surrogate["success_rate_off_target"] == 0.5
    detection = summary["held_out"]["d2"]["detection"]
    assert set(detection["adversarial"]) == {"all", "genA", "genB"}
    assert detection["clean"]["all"]["auc"] == 1.0 and detection["clean"]["all"]["f1"] == 1.0
    adversarial = detection["adversarial"]
    assert adversarial["all"]["positives"] == 6 and adversarial["genA"]["samples"] == 6
    assert [adversarial[g]["f1"] for g in ("all", "genA", "genB")] == [0.666667, 0.0, 1.0]
    # fooled fakes still score above every real image: the ranking (AUC) survives, the threshold does not
    assert adversarial["genA"]["auc"] == 1.0 and adversarial["genA"]["auc_thresholded"] == 0.5

    with tarfile.open(raid_release / "out" / "data" / "pgd-treal-linf-eps16" / "test-00000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    for key in ("real__0", "real__1", "real__2"):
        stored = np.asarray(Image.open(io.BytesIO(members[f"{key}.png"])))
        clean = np.asarray(Image.open(raid_release / "clean" / "real" / f"{key[-1]}.png"))
        assert np.array_equal(stored, clean)
        doc = json.loads(members[f"{key}.json"])
        assert doc["shift"]["attacked"] is False and len(doc["shift"]["on_held_out"]["d2"]["clean_probs"]) == 2


def test_clean_config_pairs_every_adversarial_image_with_its_scored_original(raid_release):
    provenance = json.loads((raid_release / "out" / "provenance.json").read_text())
    clean = provenance["extras"]["adversarial"]["configs"]["pgd-treal-clean"]
    assert clean["attacked"] == 0 and clean["counts"]["ok"] == 9
    assert clean["held_out"]["d2"]["detection"]["adversarial"]["all"]["f1"] == 1.0  # nothing changed
    with tarfile.open(raid_release / "out" / "data" / "pgd-treal-clean" / "test-00000.tar") as tar:
        names = sorted(m.name for m in tar.getmembers() if m.name.endswith(".png"))
    with tarfile.open(raid_release / "out" / "data" / "pgd-treal-linf-eps16" / "test-00000.tar") as tar:
        assert names == sorted(m.name for m in tar.getmembers() if m.name.endswith(".png"))


def test_report_tables_the_adversarial_rates(raid_release):
    from pipeline.views.report import adversarial_table

    provenance = json.loads((raid_release / "out" / "provenance.json").read_text())
    header, rows = adversarial_table(provenance)
    assert header[:3] == ["config", "model", "clean_accuracy"] and "adv auc" in header
    assert [r[:2] for r in rows] == [["pgd-treal-clean", "d1 (surrogate)"], ["pgd-treal-clean", "d2 (held-out)"],
                                     ["pgd-treal-linf-eps16", "d1 (surrogate)"],
                                     ["pgd-treal-linf-eps16", "d2 (held-out)"]]
    assert rows[2][header.index("success_rate_off_target")] == "0.500"


def test_report_command_shows_the_adversarial_table(raid_release, tmp_path):
    from pipeline.views.report import write_report

    report = write_report(raid_release / "out", tmp_path / "report.html", examples=2)
    markdown = report.markdown.read_text()
    assert "## Adversarial transfer" in markdown and "| pgd-treal-linf-eps16 | d2 (held-out) |" in markdown
    assert "<h2>Adversarial transfer</h2>" in report.html.read_text()


def test_many_class_models_store_their_top5_scores():
    from stages.adversarial.crafting import _scores

    probs = np.full((1, 20), 0.01)
    probs[0, [3, 7, 11]] = [0.5, 0.2, 0.13]
    assert _scores("clean", probs) == {"clean_top5": [[[3, 0.5], [7, 0.2], [11, 0.13], [0, 0.01], [1, 0.01]]]}
    assert _scores("adversarial", probs[:, :16] / probs[:, :16].sum()).keys() == {"adversarial_probs"}


def test_source_crop_attacks_and_stores_the_centre_crop(tmp_path):
    from stages.adversarial import AdversarialParams, AdversarialStage
    from stages.base import Batch

    save_scripted(brightness_detector(), tmp_path / "d.pt")
    detector = {"path": str(tmp_path / "d.pt"), "labels": ["real", "fake"], "single_logit": True,
                "resize": "none", "mean": [0.0], "std": [1.0]}
    stage = AdversarialStage(AdversarialParams(stage="adversarial", surrogates=[detector], epsilons=[4],
                                               steps=2, target="real", source_crop=(6, 5)))
    image = np.arange(9 * 8 * 3, dtype=np.uint8).reshape(9, 8, 3) + 100
    gray = np.full((4, 4), 200, np.uint8)   # smaller than the crop: zero padded
    batch = Batch(keys=["a", "b"], images=[image, gray], seeds=[1, 2], labels=[1, 1])
    out = stage.apply(batch, stage.variants()[0])
    assert out.status == ["ok", "ok"]
    assert out.images[0].shape == (6, 5, 3) and out.images[1].shape == (6, 5)
    centre = image[2:8, 2:7]            # top = round(3 / 2) = 2, left = round(3 / 2) = 2
    assert np.abs(out.images[0].astype(int) - centre.astype(int)).max() == 4
    assert stage.variants()[0].params["source_crop"] == [6, 5]


def test_summary_says_what_each_rate_counts():
    summary = transfer_summary([row(1, 0, 1, 0)])
    assert "not the target" in summary["definitions"]["success_rate_off_target"]
    assert "already of the target class" in summary["definitions"]["success_rate"]


def test_shipped_raid_manifest_describes_raids_attack():
    from pathlib import Path

    from pipeline.core.manifest import load_manifest
    from stages.adversarial import AdversarialStage

    release = load_manifest(Path(__file__).resolve().parents[2] / "manifests" / "raid.yaml")
    params = release.shifts[0]
    variants = AdversarialStage(params).variants()
    assert [v.config for v in variants] == ["pgd-treal-linf-eps16", "pgd-treal-linf-eps32", "pgd-treal-clean"]
    first = variants[0].params
    assert first["epsilon_pixel"] == pytest.approx(16 / 255) and variants[1].params["epsilon_pixel"] == 32 / 255
    assert first["step_size_pixel"] == pytest.approx(0.05) and first["steps"] == 10
    assert (first["norm"], first["random_start"], first["momentum"], first["input_diversity"]) == ("linf", False, 0, 0)
    assert (params.target, params.attack_classes, params.positive_class) == ("real", ["fake"], "fake")
    assert params.source_crop == (256, 256) and len(params.surrogates) == 7 and len(params.held_out) == 4
    assert all(m.labels == ["real", "fake"] for m in [*params.surrogates, *params.held_out])
