"""Writers: deterministic tars, exact image encodings, Zarr regions and the release store."""

from __future__ import annotations

import hashlib
import io
import tarfile

import cv2
import fsspec
import numpy as np
import pytest
import zarr

from pipeline.writers.files import ReleaseStore, atomic_write, sha256_file
from pipeline.writers.webdataset import encode_image, write_tar
from pipeline.writers.zarr_store import ZarrLayout, ensure_store, fit_image, write_region

LOCAL = fsspec.filesystem("file")


def ramp(channels: int = 3) -> np.ndarray:
    image = (np.arange(12 * 10 * channels) % 251).astype(np.uint8).reshape(12, 10, channels)
    return image


@pytest.mark.parametrize("channels", [1, 3])
def test_png_encoding_is_lossless_and_keeps_rgb_order(channels):
    image = ramp(channels)
    ext, data = encode_image(image, "png", 95)
    assert ext == "png" and data[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    decoded = decoded[..., None] if decoded.ndim == 2 else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    assert np.array_equal(decoded, image)


def test_jpeg_encoding_uses_the_given_quality():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    ext, low = encode_image(image, "jpg", 20)
    _, high = encode_image(image, "jpg", 95)
    assert ext == "jpg" and low[:2] == b"\xff\xd8" and len(low) < len(high)
    expected = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 20])[1]
    assert low == expected.tobytes()


@pytest.mark.parametrize("image", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8),
                                   np.zeros((4, 4, 2), np.uint8)])
def test_encoding_refuses_what_is_not_uint8_hxwx1_or_3(image):
    with pytest.raises(ValueError, match="expected a uint8 HxWx1 or HxWx3 image"):
        encode_image(image, "png", 95)


def test_tar_members_are_sorted_with_fixed_metadata_whatever_the_input_order(tmp_path):
    samples = [("b", {"png": b"B" * 10, "json": b"{}"}), ("a", {"json": b"[]", "cls": b"3", "png": b"A"})]
    sha, size = write_tar(LOCAL, str(tmp_path / "one.tar"), samples)
    sha_again, _ = write_tar(LOCAL, str(tmp_path / "two.tar"), list(reversed(samples)))
    data = (tmp_path / "one.tar").read_bytes()
    assert sha == sha_again == hashlib.sha256(data).hexdigest() == sha256_file(LOCAL, str(tmp_path / "one.tar"))
    assert size == len(data) and data == (tmp_path / "two.tar").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["a.cls", "a.json", "a.png", "b.json", "b.png"]
        assert {(m.mtime, m.mode, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0o444, 0, 0, "", "")}
        assert tar.extractfile("b.png").read() == b"B" * 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.tar", "two.tar"]


def test_release_store_paths_glob_and_appends(tmp_path):
    store = ReleaseStore(tmp_path / "release")
    store.makedirs()
    store.write_atomic("data/c/test-00001.tar", b"1")
    store.write_atomic("data/c/test-00000.tar", b"0")
    store.append_line("log.txt", "first\n")
    store.append_line("log.txt", "second")
    assert store.glob("data/*/*.tar") == ["data/c/test-00000.tar", "data/c/test-00001.tar"]
    assert store.read_text("log.txt") == "first\nsecond\n"
    assert store.size("data/c/test-00001.tar") == 1 and store.exists("data/c") and store.isdir("data/c")
    assert store.sha256("data/c/test-00000.tar") == hashlib.sha256(b"0").hexdigest()
    assert store.path("") == store.root and store.url("log.txt") == f"{store.root}/log.txt"
    store.rm("data/c/test-00000.tar")
    store.rm("data/c/test-00001.tar")
    store.remove_empty_folders("data")
    assert not store.exists("data/c") and store.exists("data")


def test_atomic_write_replaces_a_file_whole(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write(LOCAL, str(target), b"old contents")
    atomic_write(LOCAL, str(target), b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_zarr_region_marks_only_written_images_valid(tmp_path):
    layout = ZarrLayout(path=str(tmp_path / "c.zarr"), length=5, shard_len=2, height=4, width=4, channels=3)
    assert ensure_store(layout, {"config": "c"}) is True
    assert ensure_store(layout, {"config": "c"}) is False          # same layout: kept
    image = np.full((4, 4, 3), 9, np.uint8)
    write_region(layout, 1, [("k2", 4, image), ("k3", 7, None)])   # k3 is an error slot
    write_region(layout, 2, [("k4", "cat", image)])
    group = zarr.open_group(layout.path, mode="r")
    assert group["valid"][:].tolist() == [False, False, True, False, True]
    assert group["labels"][:].tolist() == [-1, -1, 4, 7, -1]
    assert group["keys"][:].tolist() == ["", "", "k2", "k3", "k4"]
    assert int(group["images"][3].max()) == 0 and int(group["images"][2].min()) == 9
    assert layout.region(2) == (4, 5)
    with pytest.raises(ValueError, match="unit 2 has 2 samples for a region of 1"):
        write_region(layout, 2, [("a", 0, image), ("b", 0, image)])


def test_fit_image_resizes_and_matches_channels():
    grey = np.full((8, 6, 1), 100, np.uint8)
    assert fit_image(grey, 4, 3, 3).shape == (4, 3, 3) and int(fit_image(grey, 4, 3, 3).min()) == 100
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 90
    assert fit_image(rgb, 4, 4, 1).tolist() == np.full((4, 4, 1), 30).tolist()
