"""`preview`: a contact sheet PNG — rows are source images, columns are configs.

A config whose samples carry a slider `scale` (nuisance trajectories) shows
its whole scale sweep: one column per scale, grouped by config, so each row
reads as a trajectory from the unshifted image to the strongest shift."""

from __future__ import annotations

import json
from collections import defaultdict
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image, ImageDraw, ImageFont


def _read_config(out: Path, shards: list[str], wanted: set[str] | None) -> dict[str, dict[float | None, np.ndarray]]:
    """source key -> {scale (None when the config has none): thumbnail pixels} for one config."""
    found: dict[str, dict[float | None, np.ndarray]] = defaultdict(dict)
    urls = [str(out / s) for s in shards]
    for sample in wds.WebDataset(urls, shardshuffle=False).decode("rgb8"):
        doc = sample["json"] if isinstance(sample["json"], dict) else json.loads(sample["json"])
        source_key = doc["source"]["key"]
        if wanted is not None and source_key not in wanted:
            continue
        shift = doc.get("shift") if isinstance(doc.get("shift"), dict) else {}
        scale = shift.get("scale") if isinstance(shift.get("scale"), (int, float)) else None
        found[source_key].setdefault(None if scale is None else float(scale), sample.get("png", sample.get("jpg")))
    return dict(found)


def _first_sources(out: Path, configs: list[str], rows: int) -> list[str]:
    """The first `rows` source keys, in source order (samples.parquet keeps it), that
    have an ok sample in every selected config where possible."""
    table = pq.read_table(out / "samples.parquet", columns=["source_key", "config", "status"]).to_pylist()
    ok: dict[str, set[str]] = defaultdict(set)
    for row in table:
        if row["status"] == "ok" and row["config"] in configs:
            ok[row["source_key"]].add(row["config"])
    ranked = sorted(ok, key=lambda k: -len(ok[k]))  # stable: source order among equally complete
    return ranked[:rows]


def _label_font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def contact_sheet(out: str | Path, dest: str | Path, rows: int = 6, configs: str = "*",
                  max_columns: int = 48, tile: int = 112) -> Path:
    out = Path(out)
    prov = json.loads((out / "provenance.json").read_text())
    selected = [c for c in prov["configs"] if fnmatch(c, configs) and prov["configs"][c]["shards"]]
    selected = selected[:max_columns]
    if not selected:
        raise ValueError(f"no config with shards matches {configs!r} in {out}")
    order = _first_sources(out, selected, rows)
    grid: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    columns: list[str] = []
    for config in selected:
        found = _read_config(out, prov["configs"][config]["shards"], set(order))
        scales = sorted({s for images in found.values() for s in images}, key=lambda s: (s is not None, s or 0))
        for scale in scales:
            column = config if scale is None else f"{config}-scale {scale:g}"
            columns.append(column)
            for source_key, images in found.items():
                if scale in images:
                    grid[source_key][column] = images[scale]
    columns = columns[:max_columns]
    clean = _clean_images(prov, set(order))
    if clean:
        for source_key, image in clean.items():
            grid[source_key]["clean"] = image
        columns = ["clean", *columns]
    return _draw(grid, order, columns, Path(dest), tile)


def _clean_images(prov: dict, wanted: set[str]) -> dict[str, np.ndarray]:
    """The unshifted source images, for a first column to compare against; empty if the
    source is no longer readable here (the sheet is still useful without it)."""
    from pipeline.core.manifest import ManifestError, parse_release
    from pipeline.sources import SourceError, open_source

    try:
        source = open_source(parse_release(prov["manifest"]).source)
        found = {}
        for item in source.index():
            if item.key in wanted:
                image = source.load(item).image
                if image is not None:
                    found[item.key] = image
                if len(found) == len(wanted):
                    break
        return found
    except (ManifestError, SourceError, OSError):
        return {}


def _draw(grid: dict, order: list[str], configs: list[str], dest: Path, tile: int) -> Path:
    label_w, header_h, pad = 150, 46, 4
    width = label_w + len(configs) * (tile + pad)
    height = header_h + len(order) * (tile + pad)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = _label_font(11)
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
