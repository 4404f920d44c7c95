"""Writers: deterministic tars, exact image encodings, Zarr regions and the release store."""

from __future__ import annotations

import hashlib
import io
import tarfile
import uuid

import cv2
import fsspec
import numpy as np
import pytest
import zarr

from pipeline.writers.files import ReleaseStore, atomic_write, remove_temporaries, sha256_file
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


def test_png_uses_compression_level_3_and_tars_are_ustar(tmp_path):
    image = ramp(3)
    _, data = encode_image(image, "png", 95)
    expected = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])[1]
    assert data == expected.tobytes()
    write_tar(LOCAL, str(tmp_path / "t.tar"), [("k", {"png": data})])
    header = (tmp_path / "t.tar").read_bytes()[:512]
    assert header[257:265] == b"ustar\x0000" and (tmp_path / "t.tar").stat().st_size % 512 == 0


def test_filesystem_paths_lose_their_trailing_slash():
    from pipeline.writers.files import filesystem

    fs, path = filesystem("/tmp/release/")
    assert path == "/tmp/release" and fs.protocol[0] in ("file", "local")
    assert ReleaseStore("memory://bucket/release/").root == "/bucket/release"


def test_an_object_store_appends_by_rewriting_the_whole_file():
    root = f"memory://writers-{uuid.uuid4().hex}/release"       # the memory filesystem outlives the test
    store = ReleaseStore(root)
    store.makedirs()
    store.append_line("journal.jsonl", "one")
    store.append_line("journal.jsonl", "two\n")
    assert not store.local and store.read_text("journal.jsonl") == "one\ntwo\n"
    assert store.url("journal.jsonl") == root.replace("memory://", "memory:///") + "/journal.jsonl"
    store.write_atomic("data/c/a.tar", b"a")
    store.rm("data/c")                                          # a folder and what is in it
    assert not store.exists("data/c/a.tar")
    assert remove_temporaries(store.fs, store.root) == 0


def test_removing_a_folder_and_leftover_temporary_folders(tmp_path):
    leftover = tmp_path / "data" / "c" / "x.zarr.tmp-00ff00ff"
    leftover.mkdir(parents=True)
    (leftover / "zarr.json").write_text("{}")
    assert remove_temporaries(LOCAL, str(tmp_path)) == 1 and not leftover.exists()
    assert remove_temporaries(LOCAL, str(tmp_path / "missing")) == 0
    (tmp_path / "data" / "c" / "f").write_text("x")
    (tmp_path / "data" / "d").mkdir()
    store = ReleaseStore(tmp_path)
    store.remove_empty_folders("data")
    assert (tmp_path / "data" / "c").exists() and not (tmp_path / "data" / "d").exists()
    store.rm("data/c")
    assert not (tmp_path / "data" / "c").exists()


def test_the_zarr_layout_is_sharded_per_unit_with_the_documented_fill_values(tmp_path):
    layout = ZarrLayout(path=str(tmp_path / "c.zarr"), length=5, shard_len=2, height=4, width=6, channels=1)
    ensure_store(layout, {"config": "c"})
    group = zarr.open_group(layout.path, mode="r")
    assert group.metadata.zarr_format == 3
    assert dict(group.attrs) == {"config": "c", "layout": {"length": 5, "shard_len": 2, "image_shape": [4, 6, 1]}}
    images = group["images"]
    assert images.shape == (5, 4, 6, 1) and images.chunks == (1, 4, 6, 1) and images.shards == (2, 4, 6, 1)
    assert images.dtype == np.uint8 and images.fill_value == 0
    for name, fill in (("labels", -1), ("keys", ""), ("valid", False)):
        assert group[name].chunks == (2,) and group[name].fill_value == fill, name
    bigger = ZarrLayout(path=layout.path, length=6, shard_len=2, height=4, width=6, channels=1)
    assert ensure_store(bigger, {"config": "c"}) is True            # another layout: recreated
    assert zarr.open_group(layout.path, mode="r")["images"].shape == (6, 4, 6, 1)


def test_write_region_returns_the_digest_of_exactly_what_it_wrote(tmp_path):
    layout = ZarrLayout(path=str(tmp_path / "c.zarr"), length=4, shard_len=2, height=2, width=2, channels=1)
    ensure_store(layout, {})
    image = np.arange(4, dtype=np.uint8).reshape(2, 2, 1)
    digest = write_region(layout, 1, [("k2", 3, image)])
    images = np.zeros((2, 2, 2, 1), np.uint8)
    images[0] = image
    expected = hashlib.sha256(images.tobytes())
    expected.update(np.array([3, -1], np.int64).tobytes())
    expected.update(b"k2\n")                 # valid is not part of it: verify checks it against the rows
    assert digest == expected.hexdigest()
    assert zarr.open_group(layout.path, mode="r")["images"][2:4].tolist() == images.tolist()


def test_fit_image_resizes_with_area_averaging():
    checker = np.zeros((4, 4, 3), np.uint8)
    checker[::2, ::2] = checker[1::2, 1::2] = 200
    assert fit_image(checker, 2, 2, 3).tolist() == np.full((2, 2, 3), 100).tolist()   # area mean, not a pick
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert fit_image(grey, 2, 2, 1).shape == (2, 2, 1)
    assert fit_image(np.full((2, 2, 3), 7, np.uint8), 2, 2, 1).dtype == np.uint8


def test_paths_and_lines_keep_everything_but_their_own_separator(tmp_path):
    from pipeline.writers.files import filesystem

    assert filesystem(f"{tmp_path}/outX/")[1] == f"{tmp_path}/outX"
    store = ReleaseStore(tmp_path)
    store.append_line("log.txt", "ends in spaces  \n")
    store.append_line("log.txt", "X")
    assert store.read_text("log.txt") == "ends in spaces  \nX\n"
    assert store.isdir("") and not store.isdir("log.txt")


def test_release_store_reads_parquet_tables_and_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"key": ["a", "b"], "status": ["ok", "error"]}), tmp_path / "samples.parquet")
    store = ReleaseStore(tmp_path)
    assert store.read_table("samples.parquet").to_pydict() == {"key": ["a", "b"], "status": ["ok", "error"]}
    assert store.read_table("samples.parquet", columns=["status"]).column_names == ["status"]


def test_fit_image_keeps_colour_and_averages_areas():
    ramp = np.zeros((4, 4, 3), np.uint8)
    ramp[:, :, 0] = [0, 40, 120, 200]                         # area means 20 and 160; bilinear gives others
    assert fit_image(ramp, 4, 2, 3)[0, :, 0].tolist() == [20, 160]
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[..., 2] = 90
    layout_like = fit_image(colour, 2, 2, 3)
    assert layout_like[0, 0].tolist() == [0, 0, 90]


def test_write_region_keeps_colour(tmp_path):
    layout = ZarrLayout(path=str(tmp_path / "c.zarr"), length=2, shard_len=2, height=2, width=2, channels=3)
    ensure_store(layout, {})
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[..., 2] = 90
    write_region(layout, 0, [("k", 0, colour)])
    assert zarr.open_group(layout.path, mode="r")["images"][0].tolist() == colour.tolist()
