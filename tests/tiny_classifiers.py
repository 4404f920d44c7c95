"""Tiny shape classifiers for the adversarial stage: synthetic 32 px circles,
squares and triangles, small CNNs trained on them in seconds on one CPU
thread, saved as TorchScript or `torch.export` programs and described by the
classifier specs the stage loads. Nothing is downloaded."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

LABELS = ["circle", "square", "triangle"]
MEAN, STD = 0.5, 0.25
PREP = {"input_size": (32, 32), "mean": (MEAN,) * 3, "std": (STD,) * 3, "labels": LABELS}
TRAIN_IMAGES, TRAIN_SEED = 900, 1


def shapes(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Bright circles, squares and triangles on darker backgrounds, low contrast, slight noise."""
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, 3, n)
    cx, cy = rng.uniform(11, size - 11, (2, n))
    r = rng.uniform(6, 10, n)[:, None, None]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
    circle = dx**2 + dy**2 <= r**2
    square = (np.abs(dx) <= r * 0.8) & (np.abs(dy) <= r * 0.8)
    triangle = (dy >= -r) & (dy <= r * 0.8) & (np.abs(dx) <= (dy + r) * 0.55)
    mask = np.choose(cls[:, None, None], [circle, square, triangle])
    bg = rng.uniform(0.1, 0.5, (n, 1, 1, 3))
    fg = bg + rng.uniform(0.15, 0.3, (n, 1, 1, 1))
    image = np.where(mask[..., None], fg, bg) + rng.normal(0, 0.02, (n, size, size, 3))
    return np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8), cls


def small_cnn() -> torch.nn.Module:
    import torch

    nn = torch.nn
    # the 2× average pool in front makes the net shrug off pixel noise, as real classifiers do
    return nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(512, 32), nn.Linear(32, 3))


def normalised(images: np.ndarray) -> torch.Tensor:
    """uint8 N×H×W×3 -> the float N×3×H×W input PREP describes."""
    import torch

    return (torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD


def train(model: torch.nn.Module, seed: int, images: np.ndarray, classes: np.ndarray, epochs: int = 10,
          forward=None) -> torch.nn.Module:
    """Adam, batches of 64, order drawn from `seed`; returns the model in eval mode."""
    import torch

    torch.manual_seed(seed)
    forward = forward or model
    x, y = normalised(images), torch.from_numpy(classes)
    optimiser = torch.optim.Adam(model.parameters(), 3e-3)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=order)
        for start in range(0, len(x), 64):
            idx = perm[start:start + 64]
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(forward(x[idx]), y[idx]).backward()
            optimiser.step()
    return model.eval()


def train_shape_cnns(seeds: dict[str, int]) -> dict[str, torch.nn.Module]:
    """One small CNN per name, all on the same training shapes, differing only in their seed.

    The seed also draws the initial weights, so every net is the same bytes in every process.
    """
    import torch

    images, classes = shapes(TRAIN_IMAGES, seed=TRAIN_SEED)
    nets = {}
    for name, seed in seeds.items():
        torch.manual_seed(seed)
        nets[name] = train(small_cnn(), seed, images, classes)
    return nets


def predict(net: torch.nn.Module, images) -> np.ndarray:
    """Class indices for a stack (or list) of uint8 images."""
    import torch

    with torch.no_grad():
        return net(normalised(np.stack(images))).argmax(1).numpy()


def save_scripted(net: torch.nn.Module, path: Path) -> Path:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(net).save(str(path))
    return path


def save_exported(net: torch.nn.Module, path: Path) -> Path:
    """A `torch.export` program with a dynamic batch dimension."""
    import torch

    program = torch.export.export(net, (torch.rand(2, 3, 32, 32),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))
    return path


def classifier_spec(path: Path, name: str, **extra) -> dict:
    """The stage's classifier entry for a saved shape CNN."""
    return {"path": str(path), "name": name, **PREP, **extra}
