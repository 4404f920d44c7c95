"""Every benchmark metric of `evaluate` against hand-computed answers on hand-made predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.evaluate.metrics import compute_metrics, per_config
from pipeline.evaluate.metrics.adversarial import adversarial
from pipeline.evaluate.metrics.common import average_precision, roc_auc, target_index
from pipeline.evaluate.metrics.corruptions import (
    balanced_error,
    imagenet_c,
    medmnist_c,
    normalise_imagenet_c,
    normalise_medmnist_c,
)
from pipeline.evaluate.metrics.detection import bbox_ap, coco_detections, coco_o, robustness
from pipeline.evaluate.metrics.selection import metashift, subset_distances
from pipeline.evaluate.metrics.trajectories import cns_bench, failure_point

_counter = iter(range(10**6))


def row(config, stage, target, pred, shift=None, source_key=None, meta=None, probs=None):
    """A joined sample+prediction row; `probs` = {class: probability} for the stored top-k."""
    probs = probs or {pred: 1.0}
    order = sorted(probs, key=lambda c: -probs[c])
    n = next(_counter)
    return {"key": f"k{n}", "source_key": source_key or f"s{n}", "config": config, "stage": stage,
            "shift": shift or {}, "label": target, "meta": meta or {}, "split": None, "target": target,
            "topk_index": order, "topk_score": [probs[c] for c in order]}


def corrupted(name, severity, outcomes, stage="corruptions", **shift):
    """One row per outcome: True = correct (class 0 predicted for class 0), False = wrong."""
    return [row(f"{name}-{severity}", stage, 0, 0 if ok else 1,
                {"corruption": name, "severity": severity, **shift}) for ok in outcomes]


# -- ImageNet-C -----------------------------------------------------------------------------------
def test_imagenet_c_errors_ce_mce_and_relative_mce_match_a_hand_computation():
    rows = (corrupted("gaussian_noise", 1, [1, 1, 1, 0]) + corrupted("gaussian_noise", 2, [1, 1, 0, 0])
            + corrupted("fog", 1, [1, 1, 1, 1]) + corrupted("fog", 2, [1, 1, 1, 0])
            + corrupted("speckle_noise", 1, [0, 0, 0, 0]))
    clean = [row("clean", "corruptions", 0, 0) for _ in range(4)]
    baseline = {"errors": {"gaussian_noise": {"1": 0.5, "2": 1.0}, "fog": {"1": 0.25, "2": 0.25},
                           "speckle_noise": {"1": 0.5}}, "clean_error": 0.1}
    result = imagenet_c(rows, clean, baseline)
    assert result["errors"] == {"fog": {"1": 0.0, "2": 0.25}, "gaussian_noise": {"1": 0.25, "2": 0.5},
                                "speckle_noise": {"1": 1.0}}
    assert result["clean_error"] == 0.0
    # CE_c = Σ_s E_f / Σ_s E_base: gaussian (0.25+0.5)/(0.5+1.0), fog 0.25/0.5, speckle 1.0/0.5
    assert result["ce"] == pytest.approx({"gaussian_noise": 0.5, "fog": 0.5, "speckle_noise": 2.0})
    assert result["mce"] == pytest.approx(0.5)           # speckle_noise is not one of the 15 in the mean
    assert result["mce_over"] == ["fog", "gaussian_noise"]
    # relative CE_c = Σ_s (E_f − E_f,clean) / Σ_s (E_base − E_base,clean)
    assert result["relative_ce"]["gaussian_noise"] == pytest.approx(0.75 / (1.5 - 0.2))
    assert result["relative_ce"]["fog"] == pytest.approx(0.25 / (0.5 - 0.2))
    assert result["relative_mce"] == pytest.approx((0.75 / 1.3 + 0.25 / 0.3) / 2)


def test_imagenet_c_uses_only_severities_both_models_have_and_survives_zero_denominators():
    result = normalise_imagenet_c({"fog": {"1": 0.2, "3": 0.4}}, 0.1, {"fog": {"1": 0.4, "5": 0.9}}, 0.4)
    assert result["ce"] == {"fog": pytest.approx(0.5)}
    assert result["relative_ce"] == {"fog": None}        # baseline: E_s − E_clean sums to 0
    assert result["relative_mce"] is None
    assert normalise_imagenet_c({"fog": {"1": 0.2}}, None, {"fog": {"1": 0.4}}, 0.1)["relative_ce"] == {}


def test_imagenet_c_without_labels_has_no_errors():
    rows = [row("fog-1", "corruptions", None, 1, {"corruption": "fog", "severity": 1})]
    assert imagenet_c(rows, [], None)["errors"] == {"fog": {"1": None}}
    assert compute_metrics(rows, release=None, provenance={}, model_labels=["a", "b"]) == {}


# -- MedMNIST-C -----------------------------------------------------------------------------------
def labelled(truth, pred, **kw):
    return [row("c", "medical", t, p, **kw) for t, p in zip(truth, pred)]


def test_balanced_error_is_one_minus_mean_recall_over_classes_in_the_labels():
    assert balanced_error(labelled([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]), 3) == pytest.approx(1 - (0.5 + 1 + 0.5) / 3)
    # class 2 is predicted but absent from the labels: it has no recall and is left out
    assert balanced_error(labelled([0, 0, 1, 1], [0, 2, 1, 1]), 3) == pytest.approx(0.25)
    # imbalance: plain error would be 1/5, balanced error is (0 + 1/1)/2
    assert balanced_error(labelled([0, 0, 0, 0, 1], [0, 0, 0, 0, 0]), 3) == pytest.approx(0.5)


def test_binary_balanced_error_thresholds_the_last_class_probability_strictly_above_half():
    probs = [{1: 0.7, 0: 0.3}, {1: 0.5, 0: 0.5}, {0: 0.8, 1: 0.2}, {1: 0.9, 0: 0.1}]
    rows = [row("c", "medical", t, max(p, key=p.get), probs=p) for t, p in zip([1, 1, 0, 0], probs)]
    # predicted [1, 0, 0, 1]: recall(1) = 1/2, recall(0) = 1/2
    assert balanced_error(rows, 2) == pytest.approx(0.5)
    assert balanced_error(rows, 2, threshold=0.45) == pytest.approx(1 - (1 + 0.5) / 2)


def test_multilabel_balanced_error_averages_each_labels_balanced_accuracy():
    truth = [[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]]
    probs = [[0.9, 0.2, 0.1], [0.6, 0.7, 0.4], [0.3, 0.8, 0.2], [0.1, 0.1, 0.6]]
    rows = []
    for labels, p in zip(truth, probs):
        r = row("c", "medical", None, 0, probs=dict(enumerate(p)))
        rows.append({**r, "label": labels})
    # label 0: recalls 1/2, 1/2; label 1: 1, 1; label 2 (no positives): recall(0) = 3/4 only
    assert balanced_error(rows, 3, multilabel=True) == pytest.approx(1 - (0.5 + 1 + 0.75) / 3)
    assert balanced_error(rows, 4, multilabel=True) is None            # label vectors of another length


def test_medmnist_c_normalised_and_relative_balanced_error_follow_the_official_formulas():
    result = normalise_medmnist_c({"blur": {"1": 0.2, "2": 0.4}, "noise": {"1": 0.5, "2": 0.5}}, 0.1,
                                  {"blur": {"1": 0.4, "2": 0.6}, "noise": {"1": 0.25, "2": 0.75}}, 0.2)
    # BE_c = mean_s BE / mean_s BE_base; rBE_c = (mean_s BE − BE_clean) / (mean_s BE_base − BE_base,clean)
    assert result["be"] == pytest.approx({"blur": 0.3 / 0.5, "noise": 1.0})
    assert result["rbe"] == pytest.approx({"blur": 0.2 / 0.3, "noise": 0.4 / 0.3})
    assert result["mean_be"] == pytest.approx(0.8)
    assert result["mean_rbe"] == pytest.approx(1.0)


def test_medmnist_c_groups_by_dataset_and_uses_the_clean_config():
    shift = {"dataset": "pathmnist"}
    rows = (corrupted("blur", 1, [1, 0], stage="medical", **shift) + corrupted("blur", 2, [0, 0], stage="medical",
                                                                               **shift))
    clean = [row("clean", "medical", 0, 0), row("clean", "medical", 1, 1)]
    out = medmnist_c(rows, clean, 3, {"pathmnist": {"balanced_errors": {"blur": {"1": 0.5, "2": 0.5}},
                                                    "clean_balanced_error": 0.25}})
    entry = out["pathmnist"]
    assert entry["balanced_errors"] == {"blur": {"1": 0.5, "2": 1.0}}
    assert entry["clean_balanced_error"] == 0.0
    assert entry["be"]["blur"] == pytest.approx(0.75 / 0.5)
    assert entry["rbe"]["blur"] == pytest.approx(0.75 / 0.25)


# -- CNS-Bench ------------------------------------------------------------------------------------
def trajectory(name, outcomes, scales=(0.0, 0.5, 1.0), cls="goldfish", shift_name="snow"):
    rows = []
    for scale, ok in zip(scales, outcomes):
        rows.append(row(f"cns-{shift_name}", "nuisance", 3, 3 if ok else 7,
                        {"trajectory": name, "scale": scale, "scales": [0.0, 0.5, 1.0], "class_name": cls,
                         "shift_name": shift_name}))
    return rows


def test_failure_point_is_the_smallest_scale_that_leaves_the_true_class():
    assert failure_point(trajectory("t", [1, 0, 1])) == 0.5
    assert failure_point(trajectory("t", [1, 1, 1])) is None
    assert failure_point(trajectory("t", [0, 1, 1])) == 0.0
    assert failure_point(trajectory("t", [1, 1, 0])) == 1.0


def test_cns_bench_counts_complete_trajectories_only():
    rows = (trajectory("t1", [1, 0, 1]) + trajectory("t2", [1, 1, 1]) + trajectory("t4", [0, 0, 0], cls="tench")
            + trajectory("t3", [0, 0], scales=(0.0, 0.5)))            # missing scale 1.0: dropped
    result = cns_bench(rows)
    assert result["trajectories"] == 3 and result["incomplete_dropped"] == 1
    snow = result["shifts"]["snow"]
    assert snow["accuracy_by_scale"] == pytest.approx({"0": 2 / 3, "0.5": 1 / 3, "1": 2 / 3})
    assert snow["accuracy_by_class"]["tench"] == {"0": 0.0, "0.5": 0.0, "1": 0.0}
    assert snow["accuracy_by_class"]["goldfish"] == {"0": 1.0, "0.5": 0.5, "1": 1.0}
    assert snow["failure_points"] == {"t1": 0.5, "t2": None, "t4": 0.0}
    assert snow["failure_point_distribution"] == {"0": 1, "0.5": 1, "none": 1}
    assert snow["mean_failure_point"] == pytest.approx(0.25)
    assert snow["failure_point_std"] == pytest.approx(0.5 / np.sqrt(2))   # sample std of [0.5, 0]
    assert snow["failed"] == 2 and snow["never_failed"] == 1
    assert snow["mean_margin"] == pytest.approx(((1 - 0.5) + 0 + (1 - 0)) / 3)   # never failed: margin 0


# -- MetaShift ------------------------------------------------------------------------------------
def test_metashift_accuracy_per_split_and_test_subset_beside_d():
    provenance = {"source": {"splits": [{"train": ["dog(sofa)"], "test": ["dog(shelf)", "dog(grass)"],
                                         "d": {"dog(shelf)": 0.42, "dog(grass)": 0.1}}]}}
    assert subset_distances(provenance) == {"dog(shelf)": 0.42, "dog(grass)": 0.1}
    rows = [row("train", "metashift", 0, 0, meta={"split": "train", "subsets": ["dog(sofa)"]}),
            row("test", "metashift", 0, 0, meta={"split": "test", "subsets": ["dog(shelf)"]}),
            row("test", "metashift", 0, 1, meta={"split": "test", "subsets": ["dog(shelf)", "dog(grass)"]}),
            row("test", "metashift", 0, 1, meta={"split": "test", "subsets": ["dog(grass)"]})]
    result = metashift(rows, provenance)
    assert result["splits"] == {"test": {"accuracy": pytest.approx(1 / 3), "n": 3}, "train": {"accuracy": 1.0, "n": 1}}
    assert result["subsets"] == {"dog(grass)": {"accuracy": 0.0, "n": 2, "d": 0.1},
                                 "dog(shelf)": {"accuracy": 0.5, "n": 2, "d": 0.42}}


# -- adversarial / RAID ---------------------------------------------------------------------------
def test_roc_auc_and_average_precision_by_hand():
    assert roc_auc([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1]) == pytest.approx(0.75)
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert roc_auc([1, 0], [0.5, 0.5]) == 0.5                       # a tie counts one half
    assert average_precision([1, 0], [0.5, 0.5]) == 0.5             # one threshold: P = 1/2 at R = 1
    assert roc_auc([1, 1], [0.2, 0.3]) is None and average_precision([0, 0], [0.2, 0.3]) is None


def test_adversarial_accuracy_and_success_on_clean_correct_samples_only():
    clean = [row("clean", "adversarial", 0, 0, source_key="a"), row("clean", "adversarial", 1, 1, source_key="b"),
             row("clean", "adversarial", 2, 0, source_key="c")]           # c is wrong before any attack
    shift = {"epsilon": 8, "norm": "linf", "target": None}
    attacked = [row("eps8", "adversarial", 0, 1, shift, source_key="a"),
                row("eps8", "adversarial", 1, 1, shift, source_key="b"),
                row("eps8", "adversarial", 2, 1, shift, source_key="c")]
    result = adversarial(attacked, clean, ["x", "y", "z"])
    eps8 = result["configs"]["eps8"]
    assert result["clean_accuracy"] == pytest.approx(2 / 3)
    assert eps8["accuracy"] == pytest.approx(1 / 3)
    assert eps8["attack_success"] == pytest.approx(0.5)        # a fooled, b not; c does not count
    assert "auc" not in eps8
    targeted = [row("t", "adversarial", 0, 2, {"epsilon": 4, "target": "z"}, source_key="a"),
                row("t", "adversarial", 1, 1, {"epsilon": 4, "target": "z"}, source_key="b")]
    assert adversarial(targeted, [], ["x", "y", "z"])["configs"]["t"]["attack_success"] == 0.5
    assert adversarial(attacked, [], ["x", "y", "z"])["configs"]["eps8"]["attack_success"] == pytest.approx(2 / 3)


def test_adversarial_detector_reports_auc_and_ap_of_the_generated_class():
    shift = {"epsilon": 2}
    probs = [{1: 0.9, 0: 0.1}, {1: 0.8, 0: 0.2}, {0: 0.7, 1: 0.3}, {0: 0.9, 1: 0.1}]
    rows = [row("eps2", "adversarial", t, max(p, key=p.get), shift, probs=p) for t, p in zip([1, 0, 1, 0], probs)]
    eps2 = adversarial(rows, [], ["real", "generated"])["configs"]["eps2"]
    assert eps2["auc"] == pytest.approx(0.75)
    assert eps2["ap"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert eps2["accuracy"] == pytest.approx(0.5)


# -- COCO-O ---------------------------------------------------------------------------------------
ANNOTATIONS = {
    "images": [{"id": 7, "file_name": "cat-7.png", "width": 100, "height": 100}],
    "annotations": [{"id": 1, "image_id": 7, "category_id": 17, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
                    {"id": 2, "image_id": 7, "category_id": 17, "bbox": [60, 60, 30, 30], "area": 900, "iscrowd": 0}],
    "categories": [{"id": 17, "name": "cat"}],
}


def test_bbox_ap_is_pycocotools_101_point_ap():
    one_of_two = [{"image_id": 7, "category_id": 17, "bbox": [10, 10, 20, 20], "score": 0.9}]
    # precision 1 up to recall 0.5, nothing beyond: 51 of the 101 recall points, at every IoU threshold
    assert bbox_ap(ANNOTATIONS, one_of_two) == pytest.approx(51 / 101)
    both = one_of_two + [{"image_id": 7, "category_id": 17, "bbox": [60, 60, 30, 30], "score": 0.8}]
    assert bbox_ap(ANNOTATIONS, both) == pytest.approx(1.0)
    assert bbox_ap(ANNOTATIONS, []) == 0.0


def test_coco_detections_map_keys_to_image_ids_and_labels_to_categories_by_name():
    rows = [{"key": "cat-7", "boxes": [[10, 10, 20, 20]], "box_scores": [0.9], "box_labels": [1]},
            {"key": "unknown", "boxes": [[0, 0, 1, 1]], "box_scores": [0.5], "box_labels": [0]}]
    assert coco_detections(rows, ANNOTATIONS, ["dog", "cat"]) == [
        {"image_id": 7, "category_id": 17, "bbox": [10.0, 10.0, 20.0, 20.0], "score": 0.9}]


def test_coco_o_per_domain_ap_mean_and_effective_robustness(tmp_path):
    for domain in ("sketch", "clean", "cartoon"):
        (tmp_path / "annotations" / domain).mkdir(parents=True)
        (tmp_path / "annotations" / domain / "instances.json").write_text(json.dumps(ANNOTATIONS))
    perfect = {"boxes": [[10, 10, 20, 20], [60, 60, 30, 30]], "box_scores": [0.9, 0.8], "box_labels": [0, 0]}
    half = {"boxes": [[10, 10, 20, 20]], "box_scores": [0.9], "box_labels": [0]}
    rows = [{"key": "cat-7", "config": "clean", **perfect}, {"key": "cat-7", "config": "sketch", **half},
            {"key": "cat-7", "config": "cartoon", **perfect}]
    result = coco_o(rows, tmp_path, ["cat"], {"mean_ap": 0.3, "clean_ap": 0.6})
    mean = (51 / 101 + 1.0) / 2
    assert result["ap"] == pytest.approx({"sketch": 51 / 101, "cartoon": 1.0})
    assert result["clean_ap"] == pytest.approx(1.0)
    assert result["mean_ap"] == pytest.approx(mean)
    assert result["ap_drop"] == pytest.approx(1 - mean)
    assert result["effective_robustness"] == pytest.approx(mean - 1.0 * 0.3 / 0.6)


def test_robustness_needs_a_clean_ap():
    assert robustness(0.2, None, None) == {}
    assert robustness(0.2, 0.4, None) == {"ap_drop": pytest.approx(0.2), "relative_drop": pytest.approx(0.5)}


# -- targets and the per-config table -------------------------------------------------------------
def test_target_index_reads_ints_single_item_lists_and_class_names():
    labels = ["tench", "goldfish", "shark"]
    assert target_index(2, {}, labels) == 2
    assert target_index([1], {}, labels) == 1
    assert target_index([0, 1], {}, labels) is None                 # multi-label: no single class
    assert target_index(None, {}, labels) is None
    assert target_index(0, {"class_names": ["shark", "tench"]}, labels) == 2
    assert target_index(0, {"class_name": "goldfish"}, labels) == 1      # folder / prompts sources
    assert target_index(0, {"class_name": "cat"}, labels) is None        # a class the model does not know
    assert target_index(2, {"class_name": "cat"}, ["LABEL_0", "LABEL_1", "LABEL_2"]) == 2  # unnamed logits
    assert target_index("goldfish", {}, labels) == 1
    assert target_index("cat", {}, labels) is None


def test_per_config_counts_and_accuracy():
    rows = corrupted("fog", 1, [1, 0, 1, 1]) + [row("fog-1", "corruptions", None, 0)]
    assert per_config(rows) == {"fog-1": {"stage": "corruptions", "n": 5, "labelled": 4, "accuracy": 0.75}}


# -- what report, card and plots show -------------------------------------------------------------
def test_every_benchmark_renders_a_results_row_and_a_plot(tmp_path):
    from pipeline.evaluate.plots import plot_results
    from pipeline.evaluate.summary import result_rows, results_markdown

    clean = [row("clean", "corruptions", 0, 0, source_key="a"), row("clean", "corruptions", 0, 1, source_key="b")]
    metrics = {
        "imagenet_c": imagenet_c(corrupted("fog", 1, [1, 0]) + corrupted("fog", 3, [0, 0]), clean,
                                 {"errors": {"fog": {"1": 0.25, "3": 0.5}}, "clean_error": 0.0}),
        "medmnist_c": medmnist_c(corrupted("blur", 1, [1, 0], stage="medical", dataset="bloodmnist"), clean, 3, None),
        "cns_bench": cns_bench(trajectory("t1", [1, 0, 1])),
        "metashift": metashift([row("test", "metashift", 0, 0, meta={"split": "test", "subsets": ["a(b)"]})],
                               {"x": {"test": ["a(b)"], "d": {"a(b)": 0.3}}}),
        "adversarial": adversarial([row("eps4", "adversarial", 0, 1, {"epsilon": 4}, source_key="a")], clean,
                                   ["x", "y"]),
        "coco_o": {"ap": {"sketch": 0.2, "cartoon": 0.4}, "mean_ap": 0.3, "clean_ap": 0.5, "ap_drop": 0.2,
                   "relative_drop": 0.4, "effective_robustness": -0.05},
    }
    document = {"model": {"name": "m"}, "metrics": metrics, "samples": 9}
    rows = {family: text for _, family, text in result_rows([document])}
    assert rows["imagenet_c"] == ("mean corruption error 75.0%, clean error 50.0%, mCE 200.0%, "
                                  "relative mCE 66.7%")  # (1.5 − 2·0.5) / (0.75 − 0)
    assert rows["cns_bench"] == "snow: mean failure point 0.500, never failed 0/1"
    assert rows["coco_o"] == "mean AP 0.300 over 2 domains, clean AP 0.500, effective robustness -0.050"
    assert rows["metashift"] == "test accuracy 100.0%"
    assert rows["adversarial"] == "clean accuracy 50.0%; eps4: accuracy 0.0%, success 100.0%"
    assert rows["medmnist_c"] == "bloodmnist: BE –, rBE –, clean balanced error 50.0%"  # recall(0) = 1/2
    assert results_markdown([document])[0] == "## Results"
    unlabelled = {"model": {"name": "u"}, "metrics": {}, "samples": 3, "notes": ["no labels"]}
    assert result_rows([unlabelled]) == [["u", "–", "3 samples predicted; no labels"]]
    written = plot_results(document, tmp_path)
    assert sorted(p.name for p in written) == sorted(f"m-{family}.png" for family in metrics)


# -- conformance on random fixed inputs: the official computations, re-derived -------------------
def official_medmnist_c(truth, probs_by_corruption, clean_probs, base_raw, base_clean, binary):
    """medmnistc-api Evaluator, from its definition: predictions severity-major (row i + s·N),
    BE per severity slice, `be` = mean over severities / baseline raw score, `rbe` =
    (mean − clean) / (baseline raw − baseline clean), then means over corruptions."""
    def error(y, p):
        predicted = (p[:, -1] > 0.5).astype(int) if binary else p.argmax(-1)
        return 1.0 - np.mean([np.mean(predicted[y == c] == c) for c in np.unique(y)])

    n, clean = len(truth), error(truth, clean_probs)
    be, rbe = {}, {}
    for corruption, stacked in probs_by_corruption.items():
        mean = np.mean([error(truth, stacked[s * n:(s + 1) * n]) for s in range(5)])
        be[corruption] = mean / base_raw[corruption]
        rbe[corruption] = (mean - clean) / (base_raw[corruption] - base_clean)
    return np.mean(list(be.values())), np.mean(list(rbe.values())), be, rbe


@pytest.mark.parametrize("n_classes", [2, 4])
def test_medmnist_c_matches_the_official_evaluator_on_random_predictions(n_classes):
    rng = np.random.default_rng(n_classes)
    n = 40
    truth = rng.integers(0, n_classes, n)
    probs = {c: rng.dirichlet(np.ones(n_classes), 5 * n) for c in ("gaussian_noise", "pixelate")}
    clean_probs = rng.dirichlet(np.ones(n_classes), n)
    base_raw, base_clean = {"gaussian_noise": 0.61, "pixelate": 0.47}, 0.2

    def rows_of(p, config, shift):
        out = []
        for i in range(len(p)):
            r = row(config, "medical", int(truth[i % n]), int(p[i].argmax()), shift, probs=dict(enumerate(p[i])))
            r["topk_index"], r["topk_score"] = r["topk_index"][:5], r["topk_score"][:5]   # as stored (k = 5)
            out.append(r)
        return out

    rows = []
    for corruption, stacked in probs.items():
        for s in range(5):
            rows += rows_of(stacked[s * n:(s + 1) * n], f"{corruption}-{s + 1}",
                            {"dataset": "d", "corruption": corruption, "severity": s + 1})
    clean = rows_of(clean_probs, "clean", {})
    baseline = {"d": {"balanced_errors": {c: {str(s): v for s in range(1, 6)} for c, v in base_raw.items()},
                      "clean_balanced_error": base_clean}}
    ours = medmnist_c(rows, clean, n_classes, baseline)["d"]
    mean_be, mean_rbe, be, rbe = official_medmnist_c(truth, probs, clean_probs, base_raw, base_clean, n_classes == 2)
    assert ours["be"] == pytest.approx(be, abs=1e-12) and ours["rbe"] == pytest.approx(rbe, abs=1e-12)
    assert ours["mean_be"] == pytest.approx(mean_be, abs=1e-12)
    assert ours["mean_rbe"] == pytest.approx(mean_rbe, abs=1e-12)


def test_imagenet_c_matches_the_paper_formulas_on_random_predictions():
    """mCE and relative mCE written from the paper: per corruption, sums over severities of the
    model's errors (minus its clean error) over the baseline's, averaged over the 15 corruptions."""
    from pipeline.evaluate.metrics.corruptions import COMMON_CORRUPTIONS

    rng = np.random.default_rng(0)
    n = 30
    correct = {c: rng.random((5, n)) < rng.uniform(0.2, 0.9) for c in COMMON_CORRUPTIONS}
    clean_correct = rng.random(n) < 0.8
    base = rng.uniform(0.4, 0.95, (15, 5))
    base_clean = 0.3
    rows = [r for c in COMMON_CORRUPTIONS for s in range(5) for r in corrupted(c, s + 1, correct[c][s])]
    clean = [row("clean", "corruptions", 0, 0 if ok else 1) for ok in clean_correct]
    baseline = {"errors": {c: {str(s + 1): base[i, s] for s in range(5)} for i, c in enumerate(COMMON_CORRUPTIONS)},
                "clean_error": base_clean}
    ours = imagenet_c(rows, clean, baseline)
    errors = np.array([[1 - correct[c][s].mean() for s in range(5)] for c in COMMON_CORRUPTIONS])
    clean_error = 1 - clean_correct.mean()
    ce = errors.sum(1) / base.sum(1)
    relative = (errors - clean_error).sum(1) / (base - base_clean).sum(1)
    assert ours["mce"] == pytest.approx(ce.mean(), abs=1e-12)
    assert ours["relative_mce"] == pytest.approx(relative.mean(), abs=1e-12)
    assert len(ours["mce_over"]) == 15
