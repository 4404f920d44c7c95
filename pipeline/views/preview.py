"""`preview`: a contact sheet PNG of a release, in one of two layouts.

`shifts` (the default once a release has more than 8 configs, counting each
slider scale): one block per source image, stacked vertically; rows are shifts
(`gaussian_noise`, `fog`, a slider's shift), columns are the clean source image
and then each severity, epsilon or slider scale (see `pipeline.views.preview_shifts`).
By default the block shows the first source that has a sample in every config.

`grid`: rows are source images, columns are configs; a config whose samples
carry a slider `scale` shows its whole scale sweep, one column per scale, so
each row reads as a trajectory from the unshifted image to the strongest shift.

Everything comes from the release folder: provenance.json (configs, their
params, plan order), samples.parquet (which sample of which source sits in
which shard, and why one is missing) and the shards; the clean images come
from the release's source when it is still readable here.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import defaultdict
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from pipeline.views.preview_shifts import SourceBlock, draw_shift_sheet, is_number, label_font, shift_sections

LAYOUTS = ("auto", "shifts", "grid")
AUTO_GRID_COLUMNS = 8          # auto: the grid while it is at most this many configs (scales) wide
DEFAULT_SOURCES = {"grid": 6, "shifts": 1}
DEFAULT_MAX_COLUMNS = {"grid": 48, "shifts": 8}


@dataclass(frozen=True)
class Sample:
    """One sample of one source in one config, as samples.parquet lists it."""

    config: str
    source_key: str
    key: str
    status: str
    shard: str | None
    scale: float | None


def contact_sheet(out: str | Path, dest: str | Path, rows: int | None = None, configs: str = "*",
                  max_columns: int | None = None, tile: int = 112, layout: str = "auto",
                  sources: list[str] | tuple[str, ...] = ()) -> Path:
    """Write the sheet to `dest`. `rows`: how many source images (the most complete
    first) unless `sources` names them; defaults and `max_columns` depend on the layout."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if rows is not None and rows < 1:
        raise ValueError(f"the number of source images must be at least 1, got {rows}")
    out = Path(out)
    prov = json.loads((out / "provenance.json").read_text())
    selected = _select_configs(prov, configs)
    if layout == "auto":
        layout = "grid" if _grid_width(prov, selected) <= AUTO_GRID_COLUMNS else "shifts"
    most = max_columns if max_columns is not None else DEFAULT_MAX_COLUMNS[layout]
    if most < 1:
        raise ValueError(f"max columns must be at least 1, got {most}")
    if layout == "grid":
        selected = selected[:most]
    keys = _chosen_sources(out, selected, list(sources), rows or DEFAULT_SOURCES[layout])
    samples = _samples_of(out, selected, keys)
    images = _load_images(out, samples)
    clean = _clean_images(prov, set(keys))
    if layout == "grid":
        return _grid_sheet(selected, keys, samples, images, clean, Path(dest), tile, most)
    scales: dict[str, set[float]] = defaultdict(set)
    for sample in samples:
        if sample.scale is not None:
            scales[sample.config].add(sample.scale)
    sections = shift_sections(prov["configs"], selected, {c: sorted(s) for c, s in scales.items()}, most)
    blocks = [SourceBlock(key, clean.get(key), _cells(key, samples, images)) for key in keys]
    return draw_shift_sheet(sections, blocks, Path(dest), tile)


def _select_configs(prov: dict, pattern: str) -> list[str]:
    """Configs with shards matching the glob, in plan (manifest) order."""
    planned = list(dict.fromkeys(shard["config"] for shard in prov.get("shards", []) if "config" in shard))
    order = planned + sorted(c for c in prov["configs"] if c not in planned)
    selected = [c for c in order if c in prov["configs"] and fnmatch(c, pattern) and prov["configs"][c]["shards"]]
    if not selected:
        raise ValueError(f"no config with shards matches {pattern!r}")
    return selected


def _grid_width(prov: dict, configs: list[str]) -> int:
    """Columns the grid would have: one per config, one per scale of a slider config."""
    scales = (prov["configs"][c].get("params", {}).get("scales") for c in configs)
    return sum(len(s) if isinstance(s, list) and s else 1 for s in scales)


def _chosen_sources(out: Path, configs: list[str], named: list[str], count: int) -> list[str]:
    """The named sources, else the first `count` in source order (samples.parquet keeps it)
    that have an ok sample in the most selected configs (and in at least one)."""
    columns = ["source_key", "config", "status"]
    table = pq.read_table(out / "samples.parquet", columns=columns, filters=[("config", "in", configs)])
    ok: dict[str, set[str]] = {}
    for row in table.to_pylist():
        configs_ok = ok.setdefault(row["source_key"], set())
        if row["status"] == "ok":
            configs_ok.add(row["config"])
    for key in named:
        if key not in ok:
            known = ", ".join(list(ok)[:3])
            raise ValueError(f"source {key!r} has no sample in the selected configs (sources look like {known})")
    if named:
        return list(dict.fromkeys(named))
    ranked = sorted((k for k in ok if ok[k]), key=lambda k: -len(ok[k]))  # stable: source order among equals
    return ranked[:count]


def _samples_of(out: Path, configs: list[str], keys: list[str]) -> list[Sample]:
    """The chosen sources' samples in the selected configs; only these rows' shift is parsed."""
    columns = ["key", "source_key", "config", "status", "shift", "shard"]
    table = pq.read_table(out / "samples.parquet", columns=columns,
                          filters=[("config", "in", configs), ("source_key", "in", keys)])
    return [_sample(row) for row in table.to_pylist()]


def _sample(row: dict) -> Sample:
    shift = json.loads(row["shift"] or "{}")
    scale = shift.get("scale") if isinstance(shift, dict) else None
    scale = float(scale) if is_number(scale) else None
    return Sample(row["config"], row["source_key"], row["key"], row["status"], row["shard"], scale)


def _load_images(out: Path, samples: list[Sample]) -> dict[Sample, np.ndarray]:
    """Pixels of the ok samples, opening each shard once; keys never contain a dot."""
    by_shard: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        if sample.status == "ok" and sample.shard:
            by_shard[sample.shard].append(sample)
    images = {}
    for shard, members in sorted(by_shard.items()):
        with tarfile.open(out / shard) as tar:
            names = {name.partition(".")[0]: name for name in tar.getnames()
                     if name.rpartition(".")[2] in ("png", "jpg", "jpeg")}
            for sample in members:
                if sample.key in names:
                    data = tar.extractfile(names[sample.key]).read()
                    images[sample] = np.asarray(Image.open(io.BytesIO(data)))
    return images


def _cells(source_key: str, samples: list[Sample], images: dict) -> dict:
    """(config, scale) -> pixels, or the sample's status where there are none."""
    cells: dict = {}
    for sample in samples:
        if sample.source_key == source_key and (sample.config, sample.scale) not in cells:
            cells[(sample.config, sample.scale)] = images.get(sample, sample.status)
    return cells


def _clean_images(prov: dict, wanted: set[str]) -> dict[str, np.ndarray | str]:
    """The unshifted source images, for a first column to compare against ("prompt" for an
    item of a pixel-less source, generated from its prompt); none for a source that is no
    longer readable here, or an item that fails to load (its samples are error rows
    anyway): the sheet is still useful without them."""
    from pipeline.core.manifest import ManifestError, parse_release
    from pipeline.sources import SourceError, open_source

    found: dict[str, np.ndarray | str] = {}
    try:
        source = open_source(parse_release(prov["manifest"]).source)
        seen = 0
        for item in source.index():
            if item.key in wanted:
                seen += 1
                clean = _clean_or_none(source, item)
                if clean is not None:
                    found[item.key] = clean
                if seen == len(wanted):
                    break
    except (ManifestError, SourceError, OSError):
        pass
    return found


def _clean_or_none(source, item) -> np.ndarray | str | None:
    try:
        image = source.load(item).image
    except Exception:  # noqa: BLE001 - a bad item: the build made its samples error rows too
        return None
    return "prompt" if image is None else image  # no pixels: a prompts source


def _grid_sheet(configs: list[str], keys: list[str], samples: list[Sample], images: dict,
                clean: dict[str, np.ndarray | str], dest: Path, tile: int, most: int) -> Path:
    grid: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    columns: list[str] = []
    for config in configs:
        shown = [s for s in samples if s.config == config and s in images]
        for scale in sorted({s.scale for s in shown}, key=lambda s: (s is not None, s or 0)):
            column = config if scale is None else f"{config}-scale {scale:g}"
            columns.append(column)
            for sample in shown:
                if sample.scale == scale:
                    grid[sample.source_key].setdefault(column, images[sample])
    columns = columns[:most]
    pictures = {key: image for key, image in clean.items() if isinstance(image, np.ndarray)}
    if pictures:
        for source_key, image in pictures.items():
            grid[source_key]["clean"] = image
        columns = ["clean", *columns]
    return _draw_grid(grid, keys, columns, dest, tile)


def _draw_grid(grid: dict, order: list[str], configs: list[str], dest: Path, tile: int) -> Path:
    from PIL import ImageDraw

    label_w, header_h, pad = 150, 46, 4
    width = label_w + len(configs) * (tile + pad)
    height = header_h + len(order) * (tile + pad)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = label_font(11)
    for c, config in enumerate(configs):
        x = label_w + c * (tile + pad)
        name, _, level = config.rpartition("-")
        name = name or config
        draw.text((x + 2, 2), name[:18], fill="black", font=font)
        draw.text((x + 2, 15), name[18:36], fill="black", font=font)
        draw.text((x + 2, 29), level if name != config else "", fill="gray", font=font)
    for r, source_key in enumerate(order):
        y = header_h + r * (tile + pad)
        draw.text((4, y + tile // 2 - 6), source_key[:22], fill="black", font=font)
        for c, config in enumerate(configs):
            image = grid[source_key].get(config)
            if image is None:
                continue
            thumb = Image.fromarray(np.asarray(image).squeeze()).convert("RGB").resize((tile, tile))
            sheet.paste(thumb, (label_w + c * (tile + pad), y))
    dest.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(dest)
    return dest
