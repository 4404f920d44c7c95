"""Filter models: loaded lazily from a local directory (or the local HF cache),
safetensors only, once per worker process, and hashed for provenance.

The cache is the one global a filter may keep: building a FilterChain per task
must not reload weights.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

_MODELS: dict[tuple[str, str], Any] = {}


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load(kind: str, path: str) -> Any:
    key = (kind, path)
    if key not in _MODELS:
        _MODELS[key] = _LOADERS[kind](path)
    return _MODELS[key]


def _clip(path: str) -> tuple[Any, Any]:
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(path, use_safetensors=True, local_files_only=True)
    processor = CLIPProcessor.from_pretrained(path, local_files_only=True)
    return model.eval().to(device()), processor


def _dino(path: str) -> tuple[Any, Any]:
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(path, use_safetensors=True, local_files_only=True)
    processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    return model.eval().to(device()), processor


def _classifier(path: str) -> tuple[Any, Any]:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(path, use_safetensors=True, local_files_only=True)
    processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    return model.eval().to(device()), processor


_LOADERS = {"clip": _clip, "dino": _dino, "classifier": _classifier}


def load_clip(path: str) -> tuple[Any, Any]:
    return _load("clip", path)


def load_dino(path: str) -> tuple[Any, Any]:
    return _load("dino", path)


def load_classifier(path: str) -> tuple[Any, Any]:
    return _load("classifier", path)


def features(output: Any) -> Any:
    """The embedding tensor of a `get_*_features` call (a tensor in transformers 4,
    an output whose `pooler_output` is the projection in transformers 5)."""
    return output if hasattr(output, "norm") else output.pooler_output


def model_dir(path: str) -> Path:
    """The local directory holding a model: the path itself, or its snapshot in the HF cache."""
    local = Path(path)
    if local.is_dir():
        return local
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(path, local_files_only=True))


def weight_hashes(path: str) -> dict[str, str]:
    """sha256 of every weight file of the model at `path`, by file name."""
    root = model_dir(path)
    files = sorted(p for p in root.rglob("*.safetensors") if p.is_file())
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights under {root} (model {path!r})")
    return {f"{path}/{p.relative_to(root).as_posix()}": file_sha256(str(p.resolve()), p.stat().st_mtime_ns)
            for p in files}


@cache
def file_sha256(path: str, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
