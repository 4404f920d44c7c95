"""Odd files in a folder source become error rows; oversized images are refused or downscaled."""

import io
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.core.build import build_release
from pipeline.core.manifest import parse_release
from pipeline.core.plan import plan_release
from pipeline.sources.base import SourceError
from pipeline.sources.folder import FolderSource, FolderSpec
from pipeline.sources.imagefile import MAX_PIXELS, decode_image


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def odd_folder(tmp_path):
    root = tmp_path / "images" / "cats"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    (root / "good.png").write_bytes(png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    (root / "big.png").write_bytes(png(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)))
    os.symlink("loop.jpg", root / "loop.jpg")            # a link to itself
    os.mkfifo(root / "x.jpg")                              # would block a plain open() forever
    return tmp_path / "images"


def folder_release(path, **source):
    return parse_release({
        "name": "odd", "version": "1", "source": {"kind": "folder", "path": str(path), **source},
        "shifts": [{"stage": "corruptions", "corruptions": ["contrast"], "severities": [1]}],
        "output": {"samples_per_shard": 8}})


def test_special_files_and_loops_become_error_rows(odd_folder, tmp_path):
    out = tmp_path / "release"
    result = build_release(folder_release(odd_folder, max_pixels=1500), out, workers=1)
    assert result.counts == {"total": 4, "ok": 1, "rejected": 0, "error": 3}
    reasons = {row["key"]: row["reason"] for row in pq.read_table(out / "samples.parquet").to_pylist()}
    assert reasons["cats__good"] == ""
    assert reasons["cats__x"] == "SourceError: cannot read cats/x.jpg: a FIFO, not a regular file"
    assert reasons["cats__loop"].startswith("SourceError: cannot resolve cats/loop.jpg: ")
    assert reasons["cats__big"] == ("SourceError: cannot decode cats/big.png: image claims 40x40 = 1,600 pixels, "
                                    "over the limit of 1,500 (decompression bomb guard; raise max_pixels if the "
                                    "file is trusted, or set oversize: downscale)")


def test_oversize_downscale_keeps_the_image_with_a_note(odd_folder):
    source = FolderSource(FolderSpec(kind="folder", path=str(odd_folder), max_pixels=1000, oversize="downscale"))
    item = next(i for i in source.index() if i.key == "cats__big")
    loaded = source.load(item)
    assert loaded.image.shape == (31, 31, 3)          # 40 * sqrt(1000 / 1600) = 31.6
    assert loaded.meta["notes"] == ["downscaled from 40x40 to 31x31 (area averaging) to fit max_pixels 1,000"]


def test_area_averaging_matches_block_means():
    """An exact factor of 2: every output pixel is the mean of its 2x2 block."""
    rng = np.random.default_rng(1)
    base = rng.integers(0, 250, (4, 6, 3)).astype(np.uint8)
    image = np.repeat(np.repeat(base, 2, axis=0), 2, axis=1)
    image[1::2] += 4                                   # block = a, a, a+4, a+4: mean a+2, no rounding
    pixels, notes = decode_image(png(image), "x.png", max_pixels=24, oversize="downscale")
    assert np.array_equal(pixels, base + 2)
    assert notes == ["downscaled from 12x8 to 6x4 (area averaging) to fit max_pixels 24"]
    with pytest.raises(SourceError, match="12x8 = 96 pixels, over the limit of 24"):
        decode_image(png(image), "x.png", max_pixels=24)
    assert decode_image(png(image), "x.png", max_pixels=96, oversize="downscale")[0].shape == (8, 12, 3)


def test_default_max_pixels_is_sized_for_24_gb_workers():
    # 100 samples per shard x max_pixels x 3 bytes, decoded and shifted: 24 GB
    assert MAX_PIXELS == 40_000_000 and 100 * MAX_PIXELS * 3 * 2 == 24_000_000_000


def test_decode_settings_are_in_the_fingerprint(odd_folder):
    def fingerprints(**source):
        return [u.fingerprint for u in plan_release(folder_release(odd_folder, **source)).units]

    refuse, downscale = fingerprints(max_pixels=1000), fingerprints(max_pixels=1000, oversize="downscale")
    assert refuse != downscale and refuse != fingerprints(max_pixels=2000)
    assert refuse == fingerprints(max_pixels=1000, oversize="refuse")
    assert json.dumps(refuse)


def test_an_unreadable_sub_folder_is_one_error_row(odd_folder, monkeypatch):
    """Permissions do not stop root, so the listing failure is injected."""
    from pipeline.sources import folder as folder_module

    (odd_folder / "cats" / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(path):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(folder_module.os, "scandir", scandir)
    source = FolderSource(FolderSpec(kind="folder", path=str(odd_folder)))
    items = {item.key: item for item in source.index()}
    assert sorted(items) == ["cats__big", "cats__good", "cats__locked", "cats__loop", "cats__x"]
    with pytest.raises(SourceError, match="^cannot list folder cats/locked: Permission denied$"):
        source.load(items["cats__locked"])
    assert source.load(items["cats__good"]).image.shape == (32, 32, 3)
