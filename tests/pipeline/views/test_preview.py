"""`preview`: exact cell positions of the shifts layout on a tiny real release, the grid
layout kept for small releases, and the grouping of configs into shift rows."""

import io
import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from release_fixtures import build_tiny_release

from pipeline.cli import main
from pipeline.views.preview import contact_sheet
from pipeline.views.preview_shifts import (
    GAP,
    HEADER_H,
    LABEL_W,
    MISSING_FILL,
    Level,
    SourceBlock,
    draw_shift_sheet,
    shift_sections,
)

SHIFTS = [
    {"stage": "corruptions", "corruptions": ["gaussian_noise"], "severities": [1, 3, 5]},
    {"stage": "corruptions", "corruptions": ["contrast", "pixelate", "brightness"], "severities": [2, 4]},
    {"stage": "styles", "backend": "procedural", "domains": ["sketch"]},
]
ROWS = ["gaussian_noise", "contrast", "pixelate", "brightness"]   # plan order
LEVELS = [1, 2, 3, 4, 5]                                            # columns after clean
SEVERITIES = {"gaussian_noise": [1, 3, 5], "contrast": [2, 4], "pixelate": [2, 4], "brightness": [2, 4]}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """Three random 32 px images and a broken file; 10 configs (9 with a severity, one style)."""
    root = tmp_path_factory.mktemp("preview")
    images = root / "images" / "things"
    images.mkdir(parents=True)
    rng = np.random.default_rng(5)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    (images / "img9.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return build_tiny_release(root, source={"kind": "folder", "path": str(root / "images")}, shifts=SHIFTS,
                              output={"formats": ["webdataset"], "samples_per_shard": 4})


def samples_by(release):
    """(source key, config) -> row of samples.parquet; and the source keys in order."""
    rows = pq.read_table(release / "samples.parquet").to_pylist()
    return {(r["source_key"], r["config"]): r for r in rows}, list(dict.fromkeys(r["source_key"] for r in rows))


def shard_pixels(release, row) -> np.ndarray:
    with tarfile.open(release / row["shard"]) as tar:
        return np.asarray(Image.open(io.BytesIO(tar.extractfile(f"{row['key']}.png").read())).convert("RGB"))


def cell(sheet, x0, y0, row, col, tile):
    x, y = x0 + LABEL_W + col * (tile + GAP), y0 + row * (tile + GAP)
    return sheet[y : y + tile, x : x + tile]


def source_pixels(release, key) -> np.ndarray:
    item = json.loads((release / "provenance.json").read_text())["manifest"]["source"]["path"]
    return np.asarray(Image.open(f"{item}/things/{key.split('__')[-1]}.png").convert("RGB"))


def test_rows_are_shifts_columns_are_clean_then_severities(release, tmp_path):
    by, keys = samples_by(release)
    good = [k for k in keys if all(by[(k, c)]["status"] == "ok" for (kk, c) in by if kk == k)]
    tile = 32
    sheet = np.asarray(Image.open(contact_sheet(release, tmp_path / "s.png", tile=tile)))  # auto: 10 configs
    pitch = tile + GAP
    assert sheet.shape == (HEADER_H + len(ROWS) * pitch + HEADER_H + pitch, LABEL_W + (1 + len(LEVELS)) * pitch, 3)
    source = good[0]  # the first complete source
    clean = source_pixels(release, source)
    for r, shift in enumerate(ROWS):
        assert np.array_equal(cell(sheet, 0, HEADER_H, r, 0, tile), clean)
        for c, severity in enumerate(LEVELS, start=1):
            shown = cell(sheet, 0, HEADER_H, r, c, tile)
            if severity in SEVERITIES[shift]:
                expected = shard_pixels(release, by[(source, f"{shift}-{severity}")])
                assert np.array_equal(shown, expected), (shift, severity)
            else:  # this shift has no such severity: a blank cell
                assert (shown == 255).all(), (shift, severity)
    noise3 = cell(sheet, 0, HEADER_H, 0, 3, tile)
    assert not np.array_equal(noise3, shard_pixels(release, by[(source, "gaussian_noise-1")]))
    assert not np.array_equal(noise3, shard_pixels(release, by[(source, "gaussian_noise-5")]))
    # the style domain has no severity: a section of its own, one row (clean, shifted)
    singles = HEADER_H + len(ROWS) * pitch + HEADER_H
    assert np.array_equal(cell(sheet, 0, singles, 0, 0, tile), clean)
    assert np.array_equal(cell(sheet, 0, singles, 0, 1, tile), shard_pixels(release, by[(source, "sketch")]))
    assert (cell(sheet, 0, singles, 0, 2, tile) == 255).all()


def test_one_block_per_source_and_marked_failures(release, tmp_path):
    by, keys = samples_by(release)
    broken = next(k for k in keys if by[(k, "contrast-2")]["status"] == "error")
    other = next(k for k in keys if k != broken)
    tile = 16
    sheet = np.asarray(Image.open(contact_sheet(release, tmp_path / "s.png", tile=tile, sources=[other, broken])))
    pitch = tile + GAP
    block = HEADER_H + len(ROWS) * pitch + HEADER_H + pitch
    assert sheet.shape[0] == 2 * block
    # first block: the named source, each sample resized to the tile
    expected = Image.fromarray(shard_pixels(release, by[(other, "pixelate-4")])).resize((16, 16), Image.LANCZOS)
    assert np.array_equal(cell(sheet, 0, HEADER_H, 2, 4, tile), np.asarray(expected))
    # second block: no source image and an error in every config: grey marked cells, never blank
    for r, shift in enumerate(ROWS):
        for c in [0] + [LEVELS.index(s) + 1 for s in SEVERITIES[shift]]:
            shown = cell(sheet, 0, block + HEADER_H, r, c, tile).reshape(-1, 3)
            grey = (shown == MISSING_FILL).all(axis=1).mean()
            assert 0.5 < grey < 1, (shift, c)  # the fill, with a word written on it


def test_small_release_keeps_the_grid(release, tmp_path):
    by, keys = samples_by(release)
    tile = 32
    sheet = np.asarray(Image.open(contact_sheet(release, tmp_path / "g.png", configs="gaussian_noise-*", tile=tile)))
    assert sheet.shape == (46 + 3 * 36, 150 + 4 * 36, 3)  # rows: 3 complete sources; columns: clean + 3 configs
    for r, key in enumerate(k for k in keys if by[(k, "gaussian_noise-3")]["status"] == "ok"):
        shown = sheet[46 + r * 36 : 46 + r * 36 + 32, 150 + 2 * 36 : 150 + 2 * 36 + 32]
        assert np.array_equal(shown, shard_pixels(release, by[(key, "gaussian_noise-3")]))


def test_cli_options_and_errors(release, tmp_path, capsys):
    out = tmp_path / "p.png"
    assert main(["preview", str(release), "--out", str(out), "--layout", "shifts", "--sources", "2",
                 "--max-columns", "2", "--tile", "20"]) == 0
    # two blocks; columns clean + the weakest and the strongest severity
    assert Image.open(out).size == (LABEL_W + 3 * 24, 2 * (HEADER_H + 4 * 24 + HEADER_H + 24))
    assert main(["preview", str(release), "--out", str(out), "--source", "nope"]) == 2
    assert "source 'nope' has no sample" in capsys.readouterr().err
    assert main(["preview", str(release), "--out", str(out), "--tile", "4"]) == 2
    assert main(["preview", str(release), "--out", str(out), "--configs", "fog-*"]) == 2


def test_configs_group_into_shift_rows():
    configs = {
        "pathmnist-gaussian_noise-s1": {"shift_index": 0, "stage": "medical",
                                        "params": {"corruption": "gaussian_noise", "severity": 1}},
        "bloodmnist-gaussian_noise-s2": {"shift_index": 1, "stage": "medical",
                                         "params": {"corruption": "gaussian_noise", "severity": 2}},
        "bloodmnist-gaussian_noise-s1": {"shift_index": 1, "stage": "medical",
                                         "params": {"corruption": "gaussian_noise", "severity": 1}},
        "pgd-linf-eps16": {"shift_index": 2, "stage": "adversarial", "params": {"attack": "pgd", "epsilon": 16}},
        "pgd-linf-clean": {"shift_index": 2, "stage": "adversarial", "params": {"attack": "none", "epsilon": 0}},
        "heavy_snow": {"shift_index": 3, "stage": "nuisance", "params": {"shift": "heavy snow"}},
    }
    scales = {"heavy_snow": [0.0, 0.5, 1.0, 1.5, 2.0]}
    sections = shift_sections(configs, list(configs), scales, max_columns=3)
    assert [s.kind for s in sections] == ["severity", "epsilon", "scale", None]
    severity, epsilon, scale, single = sections
    # the same corruption on two datasets: the labels keep the dataset
    assert [r.label for r in severity.rows] == ["pathmnist-gaussian_noise", "bloodmnist-gaussian_noise"]
    assert severity.rows[1].cells == {Level("severity", 2.0): ("bloodmnist-gaussian_noise-s2", None),
                                      Level("severity", 1.0): ("bloodmnist-gaussian_noise-s1", None)}
    assert severity.columns == [Level("severity", 1.0), Level("severity", 2.0)]
    assert [r.label for r in epsilon.rows] == ["pgd-linf"] and epsilon.columns == [Level("epsilon", 16.0)]
    assert [r.label for r in scale.rows] == ["heavy snow"]
    assert [lv.value for lv in scale.columns] == [0.0, 1.0, 2.0]  # thinned, weakest and strongest kept
    assert [r.label for r in single.rows] == ["pgd-linf-clean"] and single.columns == [None]


def test_a_sample_absent_for_the_source_is_marked(tmp_path):
    configs = {f"fog-{s}": {"stage": "corruptions", "params": {"corruption": "fog", "severity": s}} for s in (1, 2)}
    sections = shift_sections(configs, list(configs), {}, max_columns=8)
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    block = SourceBlock("k", None, {("fog-1", None): red})  # fog-2 has no sample of this source
    sheet = np.asarray(Image.open(draw_shift_sheet(sections, [block], tmp_path / "m.png", tile=16)))
    assert sheet.shape == (HEADER_H + 20, LABEL_W + 3 * 20, 3)
    assert (cell(sheet, 0, HEADER_H, 0, 1, 16) == (255, 0, 0)).all()
    for c in (0, 2):  # no source image; no fog-2 sample
        grey = (cell(sheet, 0, HEADER_H, 0, c, 16).reshape(-1, 3) == MISSING_FILL).all(axis=1).mean()
        assert 0.5 < grey < 1


def test_sources_chosen_by_ok_configs_then_source_order(tmp_path):
    """Without named sources, the sheet shows the sources ok in the most selected configs,
    ties in source order, and never one with no ok sample."""
    import pyarrow as pa

    from pipeline.views.preview import _chosen_sources

    rows = [  # (source, config, status), in source order as samples.parquet keeps it
        ("a", "blur", "ok"), ("a", "noise", "rejected"), ("a", "fog", "ok"),
        ("b", "blur", "ok"), ("b", "noise", "ok"), ("b", "fog", "ok"),
        ("c", "blur", "error"), ("c", "noise", "rejected"),
        ("d", "blur", "ok"), ("d", "noise", "ok"), ("d", "fog", "error"),
        ("e", "blur", "ok"), ("e", "other", "ok"), ("e", "other2", "ok"),
    ]
    table = pa.table({name: [r[i] for r in rows] for i, name in enumerate(["source_key", "config", "status"])})
    pq.write_table(table, tmp_path / "samples.parquet")
    selected = ["blur", "noise", "fog"]
    assert _chosen_sources(tmp_path, selected, [], 1) == ["b"]
    assert _chosen_sources(tmp_path, selected, [], 3) == ["b", "a", "d"]  # a before d: source order
    assert _chosen_sources(tmp_path, selected, [], 10) == ["b", "a", "d", "e"]  # c has no ok sample
    assert _chosen_sources(tmp_path, ["noise"], [], 10) == ["b", "d"]  # only the selected configs count
    assert _chosen_sources(tmp_path, selected, ["c", "a", "c"], 1) == ["c", "a"]  # named: as given, once
    with pytest.raises(ValueError, match="source 'zz' has no sample in the selected configs"):
        _chosen_sources(tmp_path, selected, ["zz"], 1)
