"""A classifier's input pipeline as it was trained, differentiable, on [0,1] pixels.

Steps, in order: resize (`exact` to height×width, `shortest_edge` keeping the
aspect ratio, or `none`), centre crop (optional), channel adaptation, then
normalisation. Declared in the manifest or read from a transformers
`preprocessor_config.json` with the image processors' semantics:

- `size: {height, width}` resizes exactly; `size: {shortest_edge: s}` scales
  the shorter side to s and the longer to int(s · long / short);
- `do_center_crop` with `crop_size` then crops the centre (top = (h − ch) // 2,
  as transformers does); a crop larger than the image pads with zeros;
- `resample` is a PIL filter code: 0 nearest, 2 bilinear, 3 bicubic (others
  are refused rather than approximated);
- `do_resize: false` keeps the input size.

A manifest `crop` follows torchvision's `CenterCrop` (top = round((h − ch) / 2)),
as detectors trained with torchvision transforms (e.g. RAID's) expect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PIL_FILTERS = {0: "nearest", 2: "bilinear", 3: "bicubic"}
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Preprocessing:
    resize: Literal["exact", "shortest_edge", "none"]
    size: tuple[int, int] | int | None        # (h, w) for exact, an int for shortest_edge
    crop: tuple[int, int] | None
    crop_rounding: Literal["floor", "round"]   # transformers // 2, torchvision round()
    interpolation: Literal["bilinear", "bicubic", "nearest"]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int

    def describe(self) -> dict[str, Any]:
        return {"resize": self.resize, "size": self.size, "crop": self.crop,
                "crop_rounding": self.crop_rounding, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std), "channels": self.channels}

    def probe_size(self) -> tuple[int, int]:
        """An input size that exercises the pipeline (for a check forward pass)."""
        if self.crop is not None:
            return self.crop
        if self.resize == "exact":
            return self.size
        if self.resize == "shortest_edge":
            return (self.size, self.size)
        return tuple(self.size) if self.size is not None else (224, 224)

    def __call__(self, images: Any) -> Any:
        x = self._resized(images)
        if self.crop is not None:
            x = center_crop(x, self.crop, self.crop_rounding)
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and self.channels == 1:
            x = (x * x.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
        mean = x.new_tensor(self.mean).view(1, -1, 1, 1)
        std = x.new_tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std

    def _resized(self, x: Any) -> Any:
        import torch.nn.functional as F

        if self.resize == "none":
            return x
        height, width = x.shape[-2:]
        if self.resize == "exact":
            target = tuple(self.size)
        else:
            target = shortest_edge_size(height, width, self.size)
        if (height, width) == target:
            return x
        if self.interpolation == "nearest":
            return F.interpolate(x, size=target, mode="nearest")
        shrinking = height > target[0] or width > target[1]
        return F.interpolate(x, size=target, mode=self.interpolation, align_corners=False,
                             antialias=shrinking).clamp(0.0, 1.0)


def shortest_edge_size(height: int, width: int, edge: int) -> tuple[int, int]:
    """transformers' output size for `size: {shortest_edge: edge}` (no max_size)."""
    short, long = (height, width) if height <= width else (width, height)
    new_short, new_long = edge, int(edge * long / short)
    return (new_short, new_long) if height <= width else (new_long, new_short)


def center_crop(x: Any, size: tuple[int, int], rounding: str) -> Any:
    """The centre size[0]×size[1] window; zero padding where the image is smaller."""
    import torch.nn.functional as F

    height, width = x.shape[-2:]
    crop_h, crop_w = size
    if crop_h > height or crop_w > width:
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        # both conventions put the extra row/column of an odd padding at the bottom/right
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        height, width = x.shape[-2:]
    if rounding == "floor":
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
    else:
        top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
    return x[..., top:top + crop_h, left:left + crop_w]


def from_processor_config(config: dict[str, Any], interpolation_declared: bool = False) -> dict[str, Any]:
    """Preprocessing fields a transformers image processor config declares."""
    declared: dict[str, Any] = {}
    size = config.get("size")
    if isinstance(size, int):
        size = {"height": size, "width": size}
    if not config.get("do_resize", True):
        declared["resize"] = "none"
    elif isinstance(size, dict) and "height" in size and "width" in size:
        declared["resize"], declared["size"] = "exact", (int(size["height"]), int(size["width"]))
    elif isinstance(size, dict) and "shortest_edge" in size:
        declared["resize"], declared["size"] = "shortest_edge", int(size["shortest_edge"])
    if config.get("do_center_crop") and config.get("crop_size") is not None:
        crop = config["crop_size"]
        crop = (crop, crop) if isinstance(crop, int) else (int(crop["height"]), int(crop["width"]))
        declared["crop"], declared["crop_rounding"] = crop, "floor"
    if "resample" in config and not interpolation_declared:
        if config["resample"] not in PIL_FILTERS:
            raise ValueError(f"preprocessor_config.json resample={config['resample']} is not supported "
                             f"(only {PIL_FILTERS}); declare interpolation: in the manifest to override")
        declared["interpolation"] = PIL_FILTERS[config["resample"]]
    if config.get("do_normalize", True):
        declared["mean"] = tuple(config.get("image_mean", IMAGENET_MEAN))
        declared["std"] = tuple(config.get("image_std", IMAGENET_STD))
    else:
        declared["mean"], declared["std"] = (0.0,), (1.0,)
    return declared
