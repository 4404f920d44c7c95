"""`shiftforge export --format medmnist-c`: severity-major layout, exact round trip."""

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.core.build import build_release
from pipeline.core.manifest import parse_release
from pipeline.release.export import ExportError, export_medmnist_c
from pipeline.writers.files import filesystem
from pipeline.writers.webdataset import encode_image, write_tar

ROOT = Path(__file__).resolve().parents[3]
N, SEVERITIES = 4, (1, 3, 5)


def pixel_value(severity: int, i: int, corruption: str) -> int:
    return 10 * severity + i + (100 if corruption == "bubble" else 0)


def write_synthetic_release(out: Path, drop: tuple[str, int, int] | None = None) -> None:
    """Two corruptions × 3 severities × N grey 6×5 images whose value encodes (corruption, severity, i);
    shards hold samples in a shuffled order; plus a non-medical row and an error row to ignore."""
    fs, root = filesystem(str(out))
    rows, rng = [], np.random.default_rng(0)
    for corruption in ("bubble", "stain_deposit"):
        for severity in SEVERITIES:
            config = f"pathmnist-{corruption}-s{severity}"
            shard = f"data/{config}/test-00000.tar"
            members = []
            for i in rng.permutation(N):
                key = f"pathmnist-test-{i:06d}"
                image = np.full((6, 5, 1), pixel_value(severity, i, corruption), np.uint8)
                status = "error" if drop == (corruption, severity, i) else "ok"
                if status == "ok":
                    members.append((key, {"png": encode_image(image, "png", 95)[1], "json": b"{}"}))
                shift = {"stage": "medical", "config": config, "dataset": "pathmnist",
                         "corruption": corruption, "severity": severity}
                rows.append({"key": key, "source_key": key, "stage": "medical", "shift": json.dumps(shift),
                             "label": json.dumps([int(i % 2), 7]), "status": status,
                             "shard": shard if status == "ok" else None})
            write_tar(fs, f"{root}/{shard}", members)
    rows.append({"key": "x", "source_key": "x", "stage": "corruptions", "shift": "{}", "label": "0",
                 "status": "ok", "shard": "data/other/test-00000.tar"})
    pq.write_table(pa.Table.from_pylist(rows), out / "samples.parquet")


def test_severity_major_layout_and_labels_are_exact(tmp_path):
    write_synthetic_release(tmp_path / "release")
    files = export_medmnist_c(tmp_path / "release", tmp_path / "c")
    assert sorted(str(f.path.relative_to(tmp_path / "c")) for f in files) == \
        ["pathmnist/bubble.npz", "pathmnist/stain_deposit.npz"]
    for corruption in ("bubble", "stain_deposit"):
        data = np.load(tmp_path / "c" / "pathmnist" / f"{corruption}.npz")
        assert sorted(data.files) == ["test_images", "test_labels"]
        images, labels = data["test_images"], data["test_labels"]
        assert images.shape == (len(SEVERITIES) * N, 6, 5) and images.dtype == np.uint8
        for s, severity in enumerate(SEVERITIES):
            for i in range(N):
                assert (images[i + s * N] == pixel_value(severity, i, corruption)).all()
                assert labels[i + s * N].tolist() == [i % 2, 7]
        assert labels.dtype == np.uint8 and labels.shape == (len(SEVERITIES) * N, 2)


def test_a_missing_sample_fails_naming_the_gap(tmp_path):
    write_synthetic_release(tmp_path / "release", drop=("stain_deposit", 3, 2))
    with pytest.raises(ExportError, match="stain_deposit: severity 3 lacks 1 of 4 .*pathmnist-test-000002"):
        export_medmnist_c(tmp_path / "release", tmp_path / "c")


def write_tiny_chestmnist(path: Path, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 2, size=(n, 14), dtype=np.uint8)
    empty, no_labels = np.zeros((0, 28, 28), np.uint8), np.zeros((0, 14), np.uint8)
    np.savez(path, test_images=images, test_labels=labels, train_images=empty, train_labels=no_labels,
             val_images=empty, val_labels=no_labels)
    return images, labels


def tar_image(release: Path, shard: str, key: str) -> np.ndarray:
    with tarfile.open(release / shard) as tar:
        data = tar.extractfile(f"{key}.png").read()
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def test_npz_build_then_cli_export_round_trips_against_samples_parquet(tmp_path):
    images, labels = write_tiny_chestmnist(tmp_path / "chestmnist_28.npz")
    release = parse_release({
        "name": "chest-c", "version": "1", "seed": 3,
        "source": {"kind": "npz", "path": str(tmp_path / "chestmnist_28.npz")},
        "shifts": [{"stage": "medical", "catalogue": "chestmnist",
                    "corruptions": ["gamma_corr_up", "pixelate"], "severities": [1, 5], "size": 32}],
        "output": {"samples_per_shard": 2},
    })
    result = build_release(release, tmp_path / "release", workers=1)
    assert result.counts["ok"] == 3 * 2 * 2
    proc = subprocess.run([sys.executable, "-m", "pipeline", "export", str(tmp_path / "release"),
                           "--format", "medmnist-c", "--out", str(tmp_path / "c")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "chestmnist/gamma_corr_up.npz: test_images (6, 32, 32), test_labels (6, 14)" in proc.stdout

    rows = pq.read_table(tmp_path / "release" / "samples.parquet").to_pylist()
    for corruption in ("gamma_corr_up", "pixelate"):
        data = np.load(tmp_path / "c" / "chestmnist" / f"{corruption}.npz")
        for row in (r for r in rows if json.loads(r["shift"])["corruption"] == corruption):
            i = int(row["source_key"].rsplit("-", 1)[1])
            s = (1, 5).index(json.loads(row["shift"])["severity"])
            written = tar_image(tmp_path / "release", row["shard"], row["key"])
            assert np.array_equal(data["test_images"][i + s * 3], written)
            assert data["test_labels"][i + s * 3].tolist() == json.loads(row["label"]) == labels[i].tolist()
    gamma = np.load(tmp_path / "c" / "chestmnist" / "gamma_corr_up.npz")["test_images"]
    assert gamma[:3].mean() < cv2.resize(images.transpose(1, 2, 0), (32, 32)).mean()  # gamma > 1 darkens


def test_medical_demo_manifest_builds_and_exports_offline(tmp_path):
    manifest = yaml.safe_load((ROOT / "manifests" / "medical-demo.yaml").read_text())
    manifest["source"]["count"] = 4
    for shift in manifest["shifts"]:
        shift["severities"], shift["corruptions"] = [5], shift["corruptions"][-2:]
    result = build_release(parse_release(manifest), tmp_path / "release", workers=1)
    assert result.counts == {"total": 16, "ok": 16, "rejected": 0, "error": 0}
    files = export_medmnist_c(tmp_path / "release", tmp_path / "c", compress=False)
    assert {(f.dataset, f.corruption, f.shape, f.label_shape) for f in files} == {
        ("pathmnist", "stain_deposit", (4, 224, 224, 3), None),
        ("pathmnist", "bubble", (4, 224, 224, 3), None),
        ("retinamnist", "brightness_down", (4, 224, 224, 3), None),
        ("retinamnist", "contrast_down", (4, 224, 224, 3), None)}
