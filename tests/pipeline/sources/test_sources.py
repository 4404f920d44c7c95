"""The folder, webdataset and npz sources on small files written here."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import re
import tarfile
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.sources import SourceError, available_sources, open_source, safe_key

SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def open_spec(**spec):
    return open_source(available_sources()[spec["kind"]].Spec(**spec))


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze()).save(buffer, "PNG")
    return buffer.getvalue()


def random_image(seed: int, shape=(24, 32, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- folder -------------------------------------------------------------------

@pytest.fixture
def class_tree(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "images"
    pixels = {"cat/a.png": random_image(1), "cat/b.png": random_image(2), "dog/deep/c.png": random_image(3),
              "top.png": random_image(4)}
    for rel, image in pixels.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(png_bytes(image))
    (root / "readme.txt").write_text("not an image")
    (root / "._a.png").write_bytes(b"macOS resource fork")
    (root / ".cache").mkdir()
    (root / ".cache" / "x.png").write_bytes(png_bytes(random_image(5)))
    return root, pixels


def test_folder_index_keys_labels_hashes_in_sorted_order(class_tree):
    root, pixels = class_tree
    source = open_spec(kind="folder", path=str(root))
    items = list(source.index())
    assert [item.key for item in items] == ["cat__a", "cat__b", "dog__deep__c", "top"]
    assert [item.label for item in items] == [0, 0, 1, None]
    assert [item.sha256 for item in items] == [sha256((root / item.ref).read_bytes()) for item in items]
    assert source.describe()["classes"] == ["cat", "dog"]
    source = pickle.loads(pickle.dumps(source))          # as sent to a worker
    for item in items:
        loaded = source.load(item)
        np.testing.assert_array_equal(loaded.image, pixels[item.ref])
        class_name = {0: "cat", 1: "dog"}.get(item.label)
        assert loaded.meta == {"path": item.ref, "notes": [], **({"class_name": class_name} if class_name else {})}


def test_folder_not_recursive_takes_only_top_level(class_tree):
    root, _ = class_tree
    items = list(open_spec(kind="folder", path=str(root), recursive=False).index())
    assert [(item.key, item.label) for item in items] == [("top", None)]


def test_folder_labels_csv_names_map_to_sorted_indices(class_tree, tmp_path):
    root, _ = class_tree
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("file,label\ncat/a.png,zebra\n./cat/b.png,ant\ntop.png,zebra\n../escape.png,ant\n")
    source = open_spec(kind="folder", path=str(root), labels_csv=str(csv_path))
    assert {item.key: item.label for item in source.index()} == {
        "cat__a": 1, "cat__b": 0, "dog__deep__c": None, "top": 1}
    assert source.describe()["classes"] == ["ant", "zebra"]


def test_folder_labels_csv_without_label_column_is_refused(class_tree, tmp_path):
    root, _ = class_tree
    (tmp_path / "bad.csv").write_text("path,class\na.png,1\n")
    with pytest.raises(SourceError, match=r"needs columns file,label \(found: path, class\)"):
        list(open_spec(kind="folder", path=str(root), labels_csv=str(tmp_path / "bad.csv")).index())


def test_folder_unsafe_names_give_safe_unique_keys(tmp_path):
    root = tmp_path / "odd"
    root.mkdir()
    names = ["a.b.c.png", "with space.png", "ünïcødé.png", "x.jpg", "x.png", "a b.png",
             f"{safe_key('a b')}.png", "sub dir/..x.png", "-.png"]
    for i, name in enumerate(names):
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(png_bytes(random_image(i)))
    items = list(open_spec(kind="folder", path=str(root)).index())
    keys = {item.ref: item.key for item in items}
    assert len(items) == len(names) - 1                 # "..x.png" is hidden in its folder
    assert all(SAFE.match(key) for key in keys.values())
    assert len(set(keys.values())) == len(keys)
    assert keys["x.jpg"] == "x"                          # sorted first, keeps the plain key
    assert keys["x.png"] == f"x-{sha256(b'x.png')[:8]}"
    assert keys["a b.png"] == safe_key("a b") and keys["a b.png"].startswith("a_b-")
    lookalike = safe_key("a b")                         # a file literally named like the cleaned key
    assert keys[f"{lookalike}.png"] == f"{lookalike}-{sha256(lookalike.encode() + b'.png')[:8]}"
    assert keys["a.b.c.png"].startswith("a_b_c-") and keys["ünïcødé.png"].startswith("n_c_d-")
    macos = tmp_path / "macos"                           # macOS stores names decomposed (NFD)
    macos.mkdir()
    (macos / unicodedata.normalize("NFD", "ünïcødé.png")).write_bytes(png_bytes(random_image(0)))
    assert [item.key for item in open_spec(kind="folder", path=str(macos)).index()] == [keys["ünïcødé.png"]]


def test_folder_refuses_symlink_escaping_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret.png"
    outside.write_bytes(png_bytes(random_image(0)))
    (root / "inside.png").write_bytes(png_bytes(random_image(1)))
    (root / "escape.png").symlink_to(outside)
    (root / "alias.png").symlink_to(root / "inside.png")
    source = open_spec(kind="folder", path=str(root))
    items = {item.key: item for item in source.index()}
    assert sorted(items) == ["alias", "escape", "inside"]
    assert items["alias"].sha256 == items["inside"].sha256
    assert items["escape"].sha256 == sha256(b"")        # nothing of the outside file was read
    with pytest.raises(SourceError, match=r"refused escape\.png: it points outside the source folder"):
        source.load(items["escape"])
    np.testing.assert_array_equal(source.load(items["alias"]).image, random_image(1))


def test_folder_bad_files_become_source_errors_and_conversions_are_noted(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("hello")
    (root / "rgba.png").write_bytes(png_bytes(np.full((4, 4, 4), 255, np.uint8)))
    source = open_spec(kind="folder", path=str(root))
    items = {item.key: item for item in source.index()}
    with pytest.raises(SourceError, match=r"^cannot decode empty\.png: empty file"):
        source.load(items["empty"])
    with pytest.raises(SourceError, match=r"^cannot decode text\.jpg: not a recognised image format"):
        source.load(items["text"])
    assert source.load(items["rgba"]).meta["notes"] == ["alpha channel of RGBA image composited on white"]


def test_folder_file_changed_after_indexing_is_refused(class_tree):
    root, _ = class_tree
    source = open_spec(kind="folder", path=str(root))
    item = next(iter(source.index()))
    (root / item.ref).write_bytes(png_bytes(random_image(99)))
    with pytest.raises(SourceError, match=r"changed since it was indexed"):
        source.load(item)


def test_folder_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match=r"is not a folder"):
        list(open_spec(kind="folder", path=str(tmp_path / "nope")).index())


# -- webdataset ---------------------------------------------------------------

def write_shard(path: Path, members: list[tuple[str, bytes]], compress: bool = False) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    payload = buffer.getvalue()
    path.write_bytes(gzip.compress(payload, mtime=0) if compress else payload)


@pytest.fixture
def shards(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    pixels = {f"img{i}": random_image(10 + i) for i in range(5)}
    write_shard(tmp_path / "train-0.tar", [
        ("s000.png", png_bytes(pixels["img0"])), ("s000.cls", b"3\n"), ("s000.json", b"{}"),
        ("s001.jpg", b"ignored: png preferred"), ("s001.png", png_bytes(pixels["img1"])),
        ("v1.0/k.png", png_bytes(pixels["img2"])), ("v1.0/k.seg.png", b"a mask, not the image"),
        ("v1.0/k.cls", b"7"),
    ])
    write_shard(tmp_path / "train-1.tar", [
        ("s000.png", png_bytes(pixels["img3"])), ("s000.cls", b"4"),
        ("meta.json", b"{\"no\": \"image\"}"),
        ("s" * 120 + ".png", png_bytes(pixels["img4"])),     # long name: a GNU long-name member
    ])
    return tmp_path, pixels


def test_webdataset_oversize_refuses_or_downscales(tmp_path):
    """max_pixels and oversize work as on a folder source: refused with the reason, or
    area-averaged to fit with a note."""
    write_shard(tmp_path / "big.tar", [("s000.png", png_bytes(random_image(3, (40, 40, 3))))])
    refuse = open_spec(kind="webdataset", urls=str(tmp_path / "big.tar"), max_pixels=1000)
    item = next(iter(refuse.index()))
    with pytest.raises(SourceError, match=r"40x40 = 1,600 pixels, over the limit of 1,000 .*oversize: downscale"):
        refuse.load(item)
    fit = open_spec(kind="webdataset", urls=str(tmp_path / "big.tar"), max_pixels=1000, oversize="downscale")
    loaded = fit.load(next(iter(fit.index())))
    assert loaded.image.shape == (31, 31, 3)          # 40 * sqrt(1000 / 1600) = 31.6
    assert loaded.meta["notes"] == ["downscaled from 40x40 to 31x31 (area averaging) to fit max_pixels 1,000"]
    with pytest.raises(Exception, match="oversize"):
        open_spec(kind="webdataset", urls=str(tmp_path / "big.tar"), oversize="crop")


def test_webdataset_index_keys_labels_hashes(shards):
    folder, pixels = shards
    source = open_spec(kind="webdataset", urls=str(folder / "train-{0..1}.tar"))
    items = list(source.index())
    long_key = safe_key("s" * 120)
    assert [item.key for item in items] == [
        "s000", "s001", safe_key("v1.0/k"), "00001_s000", "meta", long_key]
    assert [item.label for item in items] == [3, None, 7, 4, None, None]
    expected = ["img0", "img1", "img2", "img3", None, "img4"]
    for item, name in zip(items, expected):
        if name is None:
            assert item.sha256 == sha256(b"")
            with pytest.raises(SourceError, match=r"sample meta of .*train-1\.tar has no image member"):
                source.load(item)
            continue
        assert item.sha256 == sha256(png_bytes(pixels[name]))
        loaded = source.load(item)
        np.testing.assert_array_equal(loaded.image, pixels[name])
        assert loaded.meta["member"] == item.ref[1]
    assert items[2].ref[1] == "v1.0/k.png" and items[2].key.startswith("v1_0_k-")
    assert all(SAFE.match(item.key) for item in items)
    assert source.describe()["shards"] == [str(folder / "train-0.tar"), str(folder / "train-1.tar")]


def test_webdataset_load_seeks_to_the_recorded_offset(shards):
    folder, pixels = shards
    source = open_spec(kind="webdataset", urls=[str(folder / "train-0.tar")])
    item = list(source.index())[1]
    url, member, offset, size = item.ref
    raw = Path(url).read_bytes()
    assert raw[offset:offset + size] == png_bytes(pixels["img1"])
    assert member == "s001.png"


def test_webdataset_gzipped_shard(tmp_path):
    image = random_image(7, (16, 16, 1))
    write_shard(tmp_path / "g.tar.gz", [("k1.png", png_bytes(image)), ("k1.cls", b"1"),
                                        ("../up one.png", png_bytes(image[::-1]))], compress=True)
    source = open_spec(kind="webdataset", urls=[str(tmp_path / "g.tar.gz")])
    items = list(source.index())
    assert [(item.key, item.label) for item in items] == [("k1", 1), (safe_key("../up one"), None)]
    assert items[1].key.startswith("up_one-")
    np.testing.assert_array_equal(source.load(items[1]).image, image[::-1])
    assert not (tmp_path.parent / "up one.png").exists()


def test_webdataset_missing_shard_and_empty_urls(tmp_path):
    with pytest.raises(SourceError, match=r"cannot read shard .*nope-1\.tar \(after member <start>\)"):
        list(open_spec(kind="webdataset", urls=str(tmp_path / "nope-{1..2}.tar")).index())
    with pytest.raises(ValueError, match=r"at least one shard path or URL is required"):
        open_spec(kind="webdataset", urls=[])


def test_webdataset_truncated_shard_names_shard(shards):
    folder, _ = shards
    data = (folder / "train-0.tar").read_bytes()
    (folder / "cut.tar").write_bytes(data[:1200])
    with pytest.raises(SourceError, match=r"cannot read shard .*cut\.tar \(after member s000\.png\)"):
        list(open_spec(kind="webdataset", urls=[str(folder / "cut.tar")]).index())


# -- npz ------------------------------------------------------------------------

def test_npz_stored_rgb_is_memory_mapped(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28, 3), dtype=np.uint8)
    labels = np.arange(7).reshape(7, 1) % 3
    path = tmp_path / "pathmnist_64.npz"
    np.savez(path, train_images=images[:2], train_labels=labels[:2], test_images=images, test_labels=labels)
    source = open_spec(kind="npz", path=str(path))
    items = list(source.index())
    assert [item.key for item in items] == [f"pathmnist-test-{i:06d}" for i in range(7)]
    assert [item.label for item in items] == [[i % 3] for i in range(7)]
    assert [item.sha256 for item in items] == [sha256(image.tobytes()) for image in images]
    np.testing.assert_array_equal(source.load(items[5]).image, images[5])
    assert isinstance(source._images_memmap(), np.memmap)
    description = source.describe()
    assert (description["flag"], description["split"], description["items"]) == ("pathmnist", "test", 7)
    assert description["image_shape"] == [28, 28, 3] and description["compressed"] is False


def test_npz_compressed_gray_multilabel_streams(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labels = np.random.default_rng(2).integers(0, 2, (6, 14))
    path = tmp_path / "chestmnist.npz"
    np.savez_compressed(path, val_images=images, val_labels=labels)
    source = pickle.loads(pickle.dumps(open_spec(kind="npz", path=str(path), split="val")))
    items = list(source.index())
    assert items[4].key == "chestmnist-val-000004" and items[4].label == labels[4].tolist()
    assert len(items[4].label) == 14
    assert [item.sha256 for item in items] == [sha256(image.tobytes()) for image in images]
    for i in (3, 1, 5):                                  # backwards and forwards
        loaded = source.load(items[i])
        assert loaded.image.shape == (28, 28, 1)
        np.testing.assert_array_equal(loaded.image[:, :, 0], images[i])
    assert source.describe()["compressed"] is True and source.describe()["image_shape"] == [28, 28, 1]


def test_npz_missing_split_and_flag_override(tmp_path):
    path = tmp_path / "bloodmnist_224.npz"
    np.savez(path, test_images=np.zeros((2, 8, 8, 3), np.uint8), test_labels=np.zeros((2, 1), np.int64))
    assert open_spec(kind="npz", path=str(path)).flag == "bloodmnist"
    assert next(open_spec(kind="npz", path=str(path), flag="blood").index()).key == "blood-test-000000"
    with pytest.raises(SourceError, match=r"has no train_images \(arrays: test_images, test_labels\)"):
        list(open_spec(kind="npz", path=str(path), split="train").index())


def test_npz_rejects_non_uint8_images(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, test_images=np.zeros((2, 8, 8), np.float32), test_labels=np.zeros((2, 1)))
    with pytest.raises(SourceError, match=r"must be uint8 N×H×W or N×H×W×3, C order; got float32 2×8×8"):
        list(open_spec(kind="npz", path=str(path)).index())


# -- end to end -------------------------------------------------------------------

@pytest.mark.slow
def test_build_from_a_folder_of_awkward_files(tmp_path, write_manifest):
    """Bad files become error rows with their reason; conversions land in per-sample provenance."""
    import json

    import pyarrow.parquet as pq
    import webdataset as wds
    from dask.distributed import LocalCluster

    from pipeline.core.build import build_release

    root = tmp_path / "photos"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    (root / "cat" / "good.png").write_bytes(png_bytes(random_image(0, (40, 40, 3))))
    cmyk = io.BytesIO()
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(cmyk, "JPEG")
    (root / "cat" / "cmyk.jpg").write_bytes(cmyk.getvalue())
    (root / "dog" / "empty.png").write_bytes(b"")
    (root / "dog" / "notes.jpg").write_text("shopping list")
    manifest = write_manifest({
        "name": "awkward", "version": "0.0.1", "seed": 3,
        "source": {"kind": "folder", "path": str(root)},
        "shifts": [{"stage": "corruptions", "corruptions": ["contrast"], "severities": [2]}],
        "output": {"formats": ["webdataset"], "samples_per_shard": 8},
    })
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        result = build_release(manifest, tmp_path / "out", scheduler=cluster.scheduler_address)

    assert result.counts == {"total": 4, "ok": 2, "rejected": 0, "error": 2}
    rows = {row["source_key"]: row for row in pq.read_table(tmp_path / "out" / "samples.parquet").to_pylist()}
    assert "cannot decode dog/empty.png: empty file (0 bytes)" in rows["dog__empty"]["reason"]
    assert "cannot decode dog/notes.jpg: not a recognised image format" in rows["dog__notes"]["reason"]
    assert rows["cat__good"]["status"] == rows["cat__cmyk"]["status"] == "ok"
    shards = sorted(str(p) for p in (tmp_path / "out" / "data").glob("*/*.tar"))
    samples = {s["__key__"]: s for s in wds.WebDataset(shards, shardshuffle=False)}
    cmyk_doc = json.loads(samples["cat__cmyk"]["json"])
    assert cmyk_doc["meta"]["notes"] == ["CMYK image converted to RGB (no colour profile applied)"]
    assert cmyk_doc["source"]["sha256"] == sha256((root / "cat" / "cmyk.jpg").read_bytes())
    assert int(samples["cat__good"]["cls"]) == 0
