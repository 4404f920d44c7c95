"""Diffusers pipelines loaded once per worker process, and their weight hashes.

A model is a local diffusers folder (with `model_index.json`) or a repo id
already in the local Hugging Face cache; loading never downloads
(`local_files_only=True`) and never unpickles (`use_safetensors=True`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MODELS: dict[tuple[str, str | None, str, str], DiffusionModel] = {}
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


@dataclass
class DiffusionModel:
    """The components of a Stable-Diffusion-style pipeline, ready on one device."""

    ref: str  # as the manifest names it
    root: Path  # resolved folder holding model_index.json
    revision: str | None  # HF cache commit when known
    device: str
    dtype: str
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any  # template; `new_scheduler()` gives a fresh, stateless copy

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Pixel sizes must be multiples of this for the UNet's down/up sampling to line up."""
        return self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def native_size(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    def new_scheduler(self) -> Any:
        return type(self.scheduler).from_config(self.scheduler.config)

    @property
    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)


def resolve_model_root(model: str, revision: str | None = None) -> tuple[Path, str | None]:
    """The folder of `model` and its revision: a local diffusers folder, or the
    snapshot of a repo id in the local HF cache. Raises FileNotFoundError
    saying which of the two was looked for."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(
                f"model {model!r}: folder exists but has no model_index.json "
                "(expected a diffusers pipeline saved with save_pretrained)"
            )
        return path.resolve(), revision
    from huggingface_hub import snapshot_download

    try:
        root = Path(snapshot_download(model, revision=revision, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - any lookup failure means "not available offline"
        raise FileNotFoundError(
            f"model {model!r}: not a local folder and not in the local Hugging Face cache "
            f"(nothing is downloaded at run time): {type(exc).__name__}"
        ) from None
    return root, root.name


def load_model(model: str, revision: str | None, device: str, dtype: str) -> DiffusionModel:
    """The pipeline components for (model, revision, device, dtype), loaded on
    first use in this process and reused by every later task."""
    key = (model, revision, device, dtype)
    if key not in _MODELS:
        _MODELS[key] = load_fresh_model(model, revision, device, dtype)
    return _MODELS[key]


def load_fresh_model(model: str, revision: str | None, device: str, dtype: str) -> DiffusionModel:
    """A private copy, outside the cache (for training, which changes the UNet)."""
    import torch
    from diffusers import DiffusionPipeline

    root, resolved_revision = resolve_model_root(model, revision)
    pipe = DiffusionPipeline.from_pretrained(str(root), use_safetensors=True, local_files_only=True)
    missing = [
        n for n in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if getattr(pipe, n, None) is None
    ]
    if missing:
        raise ValueError(f"model {model!r}: expected a Stable-Diffusion-style pipeline, missing {missing}")
    # weights load as float32; only cast (which makes diffusers warn) when asked for another dtype
    pipe.to(device=device, dtype=None if dtype == "float32" else getattr(torch, dtype))
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.eval().requires_grad_(False)
    return DiffusionModel(
        ref=model,
        root=root,
        revision=resolved_revision,
        device=device,
        dtype=dtype,
        unet=pipe.unet,
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        scheduler=pipe.scheduler,
    )


def file_sha256(path: Path) -> str:
    """sha256 of a file. A file in the HF cache is a link to `blobs/<sha256>`
    (the LFS oid), so its name is the hash; others are hashed once per process."""
    target = path.resolve()
    if target.parent.name == "blobs" and _HEX64.match(target.name):
        return target.name
    stat = target.stat()
    key = (str(target), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(target, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


SD_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def pipeline_components(root: Path, model: str) -> list[str]:
    """The component folders `model_index.json` names, after checking that a
    Stable-Diffusion-style pipeline is complete: every required component is
    named and every named component has its folder (ValueError otherwise)."""
    try:
        index = json.loads((root / "model_index.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"model {model!r}: unreadable model_index.json ({type(exc).__name__})") from None
    named = sorted(
        k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and None not in v
    )
    missing = [c for c in SD_COMPONENTS if c not in named]
    if missing:
        raise ValueError(f"model {model!r}: model_index.json has no entry for {', '.join(missing)}")
    absent = [c for c in named if not (root / c).is_dir()]
    if absent:
        raise ValueError(f"model {model!r}: model_index.json names {', '.join(absent)} but {root} has no such folder")
    return named


def model_weight_hashes(model: str, revision: str | None = None) -> dict[str, str]:
    """{"<model>@<revision>/<file>": sha256} for every file that changes what
    the model computes: model_index.json and every file of its components
    (weights, configs, tokenizer, scheduler)."""
    root, resolved = resolve_model_root(model, revision)
    components = pipeline_components(root, model)
    files = [root / "model_index.json"]
    for component in components:
        files += sorted(p for p in (root / component).rglob("*") if p.is_file() and not p.name.startswith("."))
    if not any(p.suffix == ".safetensors" for p in files):
        raise FileNotFoundError(f"model {model!r}: no .safetensors weights under {root}")
    prefix = f"{model}@{resolved}" if resolved else model
    return {f"{prefix}/{p.relative_to(root).as_posix()}": file_sha256(p) for p in files}


def unet_weight_sha256(model: str, revision: str | None = None) -> str:
    """The hash that identifies a base model for its sliders: the UNet weights."""
    root, _ = resolve_model_root(model, revision)
    files = sorted((root / "unet").glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"model {model!r}: no unet/*.safetensors under {root}")
    if len(files) == 1:
        return file_sha256(files[0])
    return hashlib.sha256("".join(file_sha256(p) for p in files).encode()).hexdigest()
