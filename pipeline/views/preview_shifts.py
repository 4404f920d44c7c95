"""The `shifts` layout of `preview`: rows are shifts, columns are their levels.

A config is one level of a shift when its params carry a `severity` (corruptions,
medical) or an attack `epsilon` (adversarial); configs that differ only in that
level share a row, named after the shift (`gaussian_noise`). A config whose
samples carry a slider `scale` is a row of its own, one column per scale. Other
configs (style domains, splits, an attack's clean config) have no level: they
close the block in a section of their own, one row each (clean, shifted).
Every row starts with the clean source image, so it reads from the unshifted
image to the strongest shift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LABEL_W = 168        # row labels on the left
HEADER_H = 36        # column labels above each section
GAP = 4              # white space after every tile, right and below
FONT_SIZE = 14
HEADER_FILL = (240, 240, 240)
MISSING_FILL = (222, 222, 222)   # a cell with no image: rejected, error, missing, no source
KIND_ORDER = ("severity", "epsilon", "scale")


@dataclass(frozen=True, order=True)
class Level:
    kind: str      # "severity", "epsilon" or "scale"
    value: float

    @property
    def label(self) -> str:
        return f"{'eps' if self.kind == 'epsilon' else self.kind} {self.value:g}"


CellRef = tuple[str, "float | None"]   # (config, slider scale or None): which sample a cell shows


@dataclass
class ShiftRow:
    label: str
    name: str                      # the label used unless two rows would share it
    cells: dict[Level | None, CellRef] = field(default_factory=dict)


@dataclass
class Section:
    kind: str | None               # None: configs without a level
    rows: list[ShiftRow]
    columns: list[Level | None]    # after the clean column


def config_level(params: dict) -> Level | None:
    """The level a config's params put it at, if any."""
    severity, epsilon = params.get("severity"), params.get("epsilon")
    if is_number(severity):
        return Level("severity", float(severity))
    if is_number(epsilon) and params.get("attack") != "none":
        return Level("epsilon", float(epsilon))
    return None


def is_number(value: object) -> bool:
    """An int or a float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def shift_sections(configs: dict[str, dict], order: list[str], scales: dict[str, list[float]],
                   max_columns: int) -> list[Section]:
    """Group configs (`provenance.json` entries, in `order`) into shift rows and the rows
    into one section per kind of level; `scales` lists each slider config's scales."""
    rows: dict[tuple, ShiftRow] = {}
    kinds: dict[tuple, str | None] = {}
    for config in order:
        entry = configs[config]
        params = entry.get("params") or {}
        level = config_level(params)
        if scales.get(config):
            group, kind = ("scale", config), "scale"
            row = rows.setdefault(group, ShiftRow(str(params.get("shift") or config), config))
            row.cells.update({Level("scale", s): (config, s) for s in scales[config]})
        elif level is not None:
            base = config.rsplit("-", 1)[0] if "-" in config else config
            group, kind = (level.kind, entry.get("shift_index"), entry.get("stage"), base), level.kind
            name = params.get("corruption") if isinstance(params.get("corruption"), str) else base
            rows.setdefault(group, ShiftRow(name, base)).cells[level] = (config, None)
        else:
            group, kind = ("single", config), None
            rows[group] = ShiftRow(config, config, {None: (config, None)})
        kinds[group] = kind
    _unique_labels(list(rows.values()))
    sections = []
    for kind in sorted(set(kinds.values()), key=lambda k: KIND_ORDER.index(k) if k else len(KIND_ORDER)):
        members = [rows[g] for g in rows if kinds[g] == kind]
        columns = [None] if kind is None else _spread(sorted({lv for r in members for lv in r.cells}), max_columns)
        sections.append(Section(kind, members, columns))
    return sections


def _unique_labels(rows: list[ShiftRow]) -> None:
    """Short labels (`gaussian_noise`) unless two rows share one, e.g. two medical datasets."""
    seen: dict[str, int] = {}
    for row in rows:
        seen[row.label] = seen.get(row.label, 0) + 1
    for row in rows:
        if seen[row.label] > 1:
            row.label = row.name


def _spread(levels: list[Level], most: int) -> list[Level]:
    """At most `most` levels, evenly spaced, always keeping the weakest and the strongest."""
    if len(levels) <= most:
        return levels
    if most == 1:
        return levels[-1:]
    return [levels[round(i * (len(levels) - 1) / (most - 1))] for i in range(most)]


Cell = np.ndarray | str   # the sample's pixels, or why there are none ("rejected", "missing", …)


@dataclass
class SourceBlock:
    source_key: str
    clean: np.ndarray | str | None  # a str: why there is no clean image (shown in its tile)
    cells: dict[CellRef, Cell]


def sheet_size(sections: list[Section], blocks: int, tile: int) -> tuple[int, int]:
    pitch = tile + GAP
    width = LABEL_W + max(len(s.columns) + 1 for s in sections) * pitch
    height = blocks * sum(HEADER_H + len(s.rows) * pitch for s in sections)
    return width, height


def draw_shift_sheet(sections: list[Section], blocks: list[SourceBlock], dest: Path, tile: int) -> Path:
    """One block per source, stacked: each section a header row, then its shift rows."""
    sheet = Image.new("RGB", sheet_size(sections, len(blocks), tile), "white")
    draw = ImageDraw.Draw(sheet)
    font = label_font(FONT_SIZE)
    pitch, y = tile + GAP, 0
    for block in blocks:
        for s, section in enumerate(sections):
            corner = ["source", block.source_key] if s == 0 else ["other configs"] if section.kind is None else []
            labels = ["clean", *("shifted" if lv is None else lv.label for lv in section.columns)]
            _draw_header(draw, font, y, sheet.width, corner, labels, pitch)
            y += HEADER_H
            for row in section.rows:
                _draw_label(draw, font, row.label, y, tile)
                _paste(sheet, font, "no source" if block.clean is None else block.clean, LABEL_W, y, tile)
                for c, level in enumerate(section.columns, start=1):
                    ref = row.cells.get(level)
                    cell = block.cells.get(ref, "missing") if ref is not None else None
                    if cell is not None:
                        _paste(sheet, font, cell, LABEL_W + c * pitch, y, tile)
                y += pitch
    dest.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(dest)
    return dest


def _draw_header(draw: ImageDraw.ImageDraw, font, y: int, width: int, corner: list[str], labels: list[str],
                 pitch: int) -> None:
    draw.rectangle((0, y, width - 1, y + HEADER_H - GAP - 1), fill=HEADER_FILL)
    for i, line in enumerate(corner[:2]):
        draw.text((4, y + 2 + i * (FONT_SIZE + 2)), line, fill="black", font=_shrunk(font, line, LABEL_W - 8))
    for c, label in enumerate(labels):
        x = LABEL_W + c * pitch + (pitch - GAP - font.getlength(label)) / 2
        draw.text((x, y + HEADER_H - GAP - FONT_SIZE - 6), label, fill="black", font=font)


def _draw_label(draw: ImageDraw.ImageDraw, font, label: str, y: int, tile: int) -> None:
    lines = _wrap(label, font, LABEL_W - 8)[: max(1, tile // (FONT_SIZE + 3))]
    top = y + (tile - len(lines) * (FONT_SIZE + 3)) // 2
    for i, line in enumerate(lines):
        draw.text((4, top + i * (FONT_SIZE + 3)), line, fill="black", font=font)


def _paste(sheet: Image.Image, font, cell: Cell, x: int, y: int, tile: int) -> None:
    sheet.paste(marker_tile(cell, tile, font) if isinstance(cell, str) else fit_tile(cell, tile), (x, y))


def marker_tile(text: str, tile: int, font) -> Image.Image:
    """A grey tile saying why there is no image; the word shrinks to fit, else is clipped."""
    square = Image.new("RGB", (tile, tile), MISSING_FILL)
    font = _shrunk(font, text, tile - 4)
    ImageDraw.Draw(square).text(((tile - font.getlength(text)) / 2, (tile - getattr(font, "size", 11)) // 2), text,
                                fill=(96, 96, 96), font=font)
    return square


def fit_tile(image: np.ndarray, tile: int) -> Image.Image:
    """The image scaled to fit a tile x tile square (aspect kept, centred on white)."""
    thumb = Image.fromarray(np.asarray(image).squeeze()).convert("RGB")
    w, h = thumb.size
    scale = tile / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size != thumb.size:
        thumb = thumb.resize(size, Image.Resampling.LANCZOS)
    if size == (tile, tile):
        return thumb
    square = Image.new("RGB", (tile, tile), "white")
    square.paste(thumb, ((tile - size[0]) // 2, (tile - size[1]) // 2))
    return square


def _wrap(text: str, font, width: float) -> list[str]:
    """Greedy line breaks after `_`, `-` or spaces; a word longer than a line is cut."""
    lines, line = [], ""
    for word in re.findall(r"[^_\- ]+[_\- ]*|[_\- ]+", text):
        if line and font.getlength(line + word) > width:
            lines.append(line)
            line = ""
        while font.getlength(word) > width and len(word) > 1:
            cut = max(i for i in range(1, len(word) + 1) if font.getlength(word[:i]) <= width or i == 1)
            lines.append(word[:cut])
            word = word[cut:]
        line += word
    return [*lines, line] if line else lines


def _shrunk(font, text: str, width: float):
    """The font, smaller (down to 9 px) while the text is wider than `width`: long source keys."""
    size = FONT_SIZE
    while size > 9 and font.getlength(text) > width:
        size -= 1
        font = label_font(size)
    return font


def label_font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()
