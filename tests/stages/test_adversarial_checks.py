"""Models are checked before any work: files, logit counts and label spaces against the source."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from pipeline.core.manifest import ManifestError, parse_release  # noqa: E402
from pipeline.core.plan import plan_release  # noqa: E402
from tests.tiny_classifiers import LABELS, PREP, save_scripted, shapes, small_cnn  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("adv_checks")
    images, classes = shapes(3, seed=4)
    for i, (image, cls) in enumerate(zip(images, classes)):
        (root / "clean" / LABELS[cls]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "clean" / LABELS[cls] / f"img{i}.png")
    for cls in LABELS:  # every class has a folder even when no image drew it
        (root / "clean" / cls).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_scripted(small_cnn(), root / "net.pt")
    four = small_cnn()
    four[-1] = torch.nn.Linear(32, 4)
    save_scripted(four, root / "four.pt")
    return root


def manifest(root: Path, surrogate: dict, **stage) -> dict:
    return {"name": "adv-check", "version": "0.0.1", "seed": 1,
            "source": {"kind": "folder", "path": str(root / "clean")},
            "shifts": [{"stage": "adversarial", "surrogates": [surrogate], "epsilons": [4], "steps": 1,
                        **stage}],
            "output": {"formats": ["webdataset"], "samples_per_shard": 4, "encoding": "png"}}


def spec(path: Path, **extra) -> dict:
    return {"path": str(path), "name": "net", **PREP, **extra}


def plan_error(release_dict: dict) -> str:
    with pytest.raises(ManifestError) as info:
        plan_release(parse_release(release_dict))
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_good_setup_plans(workspace):
    plan = plan_release(parse_release(manifest(workspace, spec(workspace / "net.pt"))))
    assert len(plan.units) == 1


def test_stage_labels_in_another_order_than_the_source_are_refused(workspace):
    swapped = [LABELS[1], LABELS[0], LABELS[2]]
    message = plan_error(manifest(workspace, spec(workspace / "net.pt"), labels=swapped))
    assert "in another order" in message and "circle" in message


def test_source_classes_check_against_the_label_space():
    from stages.adversarial import check_source_classes

    check_source_classes(["cat", "dog"], ["bird", "cat", "dog"], declared=True)   # a subset: by name
    check_source_classes(["dog", "cat"], ["cat", "dog"], declared=False)          # models realign by name
    check_source_classes(["cat", "dog"], ["LABEL_0", "LABEL_1"], declared=False)
    check_source_classes([], ["cat"], declared=True)                              # unnamed source
    with pytest.raises(ValueError, match=r"\['cow'\] are not in labels"):
        check_source_classes(["cat", "cow"], ["bird", "cat", "dog"], declared=True)
    with pytest.raises(ValueError, match="another order"):
        check_source_classes(["cat", "dog"], ["dog", "cat"], declared=True)
    with pytest.raises(ValueError, match="3 unnamed classes, the source 2"):
        check_source_classes(["cat", "dog"], ["LABEL_0", "LABEL_1", "LABEL_2"], declared=False)


def test_model_labels_must_name_the_source_classes(workspace):
    message = plan_error(manifest(workspace, spec(workspace / "net.pt", labels=["cat", "dog", "bird"])))
    assert "the source's classes ['circle', 'square', 'triangle'] are not in the first surrogate's" in message
    other = {**spec(workspace / "net.pt", labels=["cat", "dog", "bird"]), "name": "other"}
    message = plan_error(manifest(workspace, spec(workspace / "net.pt"), held_out=[other]))
    assert "model 'other' label space differs" in message


def test_more_logits_than_labels_is_refused(workspace):
    message = plan_error(manifest(workspace, spec(workspace / "four.pt")))
    assert "outputs shape (1, 4)" in message and "3 logits" in message


def test_single_logit_needs_one_logit_and_two_labels(workspace):
    message = plan_error(manifest(workspace, spec(workspace / "net.pt", single_logit=True)))
    assert "single_logit needs exactly 2 labels" in message


def write_bad_model(root: Path, kind: str) -> Path:
    if kind == "missing":
        return root / "nowhere.pt"
    if kind == "pth":
        path = root / "weights.pth"
        torch.save({"w": torch.zeros(1)}, path)
        return path
    if kind == "pickle_pt":
        path = root / "pickled.pt"
        path.write_bytes(pickle.dumps({"state_dict": [1, 2, 3]}))
        return path
    from transformers import AutoModelForImageClassification, ResNetConfig

    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8], depths=[1], num_labels=3,
                          id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    folder = root / kind
    net = AutoModelForImageClassification.from_config(config)
    net.save_pretrained(folder)
    if kind == "bin_only":  # an older-style checkpoint: pickled weights only
        torch.save(net.state_dict(), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    if kind == "corrupt_safetensors":
        (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    return folder


@pytest.mark.parametrize("kind, expected", [
    ("missing", "does not exist"), ("pth", "cannot tell the model format"),
    ("pickle_pt", "cannot load torchscript model"), ("bin_only", "no *.safetensors"),
    ("corrupt_safetensors", "cannot load transformers model"),
])
def test_unusable_model_files_are_bad_input(workspace, kind, expected):
    path = write_bad_model(workspace, kind)
    declared = {"input_size": (32, 32)} if kind in ("bin_only", "corrupt_safetensors") else PREP
    message = plan_error(manifest(workspace, {"path": str(path), "name": "net", **declared}))
    assert expected in message


def test_zarr_output_is_refused_for_budgeted_shifts(workspace):
    release = manifest(workspace, spec(workspace / "net.pt"))
    release["output"].update(formats=["webdataset", "zarr"], image_size=[32, 32])
    with pytest.raises(ManifestError, match="drop 'zarr' or give the stage a fixed output size"):
        parse_release(release)
    release["shifts"][0]["source_crop"] = [28, 28]
    with pytest.raises(ManifestError, match=r"equal to output.image_size \(32, 32\)"):
        parse_release(release)
    release["shifts"][0]["source_crop"] = [32, 32]
    parse_release(release)


@pytest.mark.slow
def test_zarr_store_holds_the_stored_pixels_exactly(workspace, tmp_path):
    import tarfile

    import zarr

    from pipeline.core.build import build_release

    release = manifest(workspace, spec(workspace / "net.pt"), source_crop=[30, 30], epsilons=[8])
    release["output"].update(formats=["webdataset", "zarr"], image_size=[30, 30])
    build_release(parse_release(release), tmp_path / "out", workers=1)
    store = zarr.open_group(str(tmp_path / "out" / "zarr" / "pgd-linf-eps8.zarr"), mode="r")
    by_key = {str(k): np.asarray(img) for k, img, ok in zip(store["keys"][:], store["images"][:], store["valid"][:])
              if ok}
    with tarfile.open(tmp_path / "out" / "data" / "pgd-linf-eps8" / "test-00000.tar") as tar:
        pngs = {m.name[:-4]: tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".png")}
    assert sorted(by_key) == sorted(pngs) and len(pngs) == 3
    for key, data in pngs.items():
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), by_key[key])


@pytest.mark.slow
def test_cli_exits_2_with_one_line_and_writes_nothing(workspace, tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(manifest(workspace, spec(workspace / "four.pt"))))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "pipeline", "build", str(path), "--out", str(out),
                           "--workers", "1"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "outputs shape (1, 4)" in lines[0]
    assert not out.exists()


def test_samples_map_by_class_name_whatever_the_model_order(workspace):
    from stages.adversarial import AdversarialParams, AdversarialStage
    from stages.base import Batch

    reordered = spec(workspace / "net.pt", labels=[LABELS[2], LABELS[0], LABELS[1]])
    stage = AdversarialStage(AdversarialParams(stage="adversarial", surrogates=[reordered], epsilons=[2],
                                               steps=1))
    image = np.zeros((32, 32, 3), np.uint8)
    batch = Batch(keys=["a"], images=[image], seeds=[1], labels=[0], meta=[{"class_name": "circle"}])
    out = stage.apply(batch, stage.variants()[0])
    # the stage's label space is the model's order: circle is index 1 there, not the source's 0
    assert out.status == ["ok"] and out.shift[0]["label_index"] == 1


def test_resize_none_probes_at_the_declared_input_size(workspace):
    fixed = {"path": str(workspace / "net.pt"), "name": "net", "resize": "none", "labels": LABELS}
    message = plan_error(manifest(workspace, fixed))
    assert "fails on a 224×224 input" in message
    plan_release(parse_release(manifest(workspace, {**fixed, "input_size": [32, 32]})))
