"""MedMNIST-C severity tables: for each of the 12 2D MedMNIST datasets, the
corruptions it is tested under and their raw parameters at severity 1..5.

Values are the published ones (Di Salvo et al. 2024, `medmnistc` 0.1.0),
defined for 224×224 images. Zoom-blur levels are (start, stop, step) of
`np.arange`, as published. `MODALITIES` names the imaging modality behind
each catalogue so any folder of, say, dermoscopy images can be corrupted
the way DermaMNIST-C is.
"""

from __future__ import annotations

from typing import Any

SEVERITIES = (1, 2, 3, 4, 5)
NATIVE_SIZE = 224  # side length the severity tables were tuned for

Table = dict[str, tuple[Any, ...]]

_PATH: Table = {
    "pixelate": (0.8, 0.6, 0.4, 0.3, 0.25),
    "jpeg_compression": (50, 30, 15, 10, 7),
    "defocus_blur": ((3, 0.1), (4, 0.1), (5, 0.2), (6, 0.2), (7, 0.3)),
    "motion_blur": ((5, 5), (10, 5), (15, 5), (15, 8), (15, 12)),
    "brightness_up": (1.1, 1.15, 1.2, 1.22, 1.25),
    "brightness_down": (0.85, 0.8, 0.75, 0.72, 0.7),
    "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
    "contrast_down": (0.8, 0.7, 0.6, 0.55, 0.5),
    "saturate": (0.05, 0.1, 0.15, 0.2, 0.25),
    "stain_deposit": (1, 2, 3, 4, 5),
    "bubble": ((7, 15), (10, 15), (12, 15), (15, 20), (17, 25)),
}

_BLOOD: Table = {
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    "jpeg_compression": (50, 30, 15, 10, 7),
    "defocus_blur": ((2, 0.01), (3, 0.1), (4, 0.1), (5, 0.1), (6, 0.1)),
    "motion_blur": ((3, 3), (5, 5), (10, 5), (10, 7), (10, 9)),
    "brightness_up": (1.1, 1.2, 1.3, 1.35, 1.4),
    "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
    "contrast_up": (1.1, 1.15, 1.2, 1.25, 1.3),
    "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.5),
    "saturate": (0.05, 0.1, 0.15, 0.17, 0.2),
    "stain_deposit": (1, 2, 3, 3, 3),
    "bubble": ((5, 10), (7, 10), (10, 10), (12, 12), (15, 12)),
}

_DERMA: Table = {
    "pixelate": (0.7, 0.5, 0.4, 0.3, 0.25),
    "jpeg_compression": (30, 20, 15, 10, 7),
    "gaussian_noise": (0.04, 0.08, 0.12, 0.18, 0.26),
    "speckle_noise": (0.05, 0.15, 0.2, 0.35, 0.45),
    "impulse_noise": (0.01, 0.03, 0.06, 0.09, 0.17),
    "shot_noise": (60, 25, 18, 10, 5),
    "defocus_blur": ((4, 0.1), (5, 0.2), (6, 0.3), (7, 0.4), (8, 0.5)),
    "motion_blur": ((10, 5), (15, 5), (15, 8), (15, 12), (20, 15)),
    "zoom_blur": ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)),
    "brightness_up": (1.1, 1.2, 1.3, 1.4, 1.5),
    "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
    "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
    "contrast_down": (0.8, 0.7, 0.6, 0.5, 0.4),
    # not monotonic in the published table: severity 4 cuts deeper than 5
    "black_corner": (1.10, 1.05, 1.00, 0.90, 0.95),
    "characters": ((1, 6, 0.14), (2, 7, 0.15), (3, 8, 0.16), (4, 9, 0.17), (6, 10, 0.18)),
}

_RETINA: Table = {
    "pixelate": (0.8, 0.6, 0.5, 0.4, 0.35),
    "jpeg_compression": (30, 25, 20, 10, 5),
    "gaussian_noise": (0.04, 0.08, 0.12, 0.16, 0.2),
    "speckle_noise": (0.1, 0.15, 0.2, 0.25, 0.3),
    "defocus_blur": ((4, 0.1), (5, 0.2), (6, 0.3), (7, 0.4), (8, 0.5)),
    "motion_blur": ((8, 5), (15, 5), (15, 8), (15, 12), (20, 15)),
    "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
    "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
}

_TISSUE: Table = {
    "pixelate": (0.4, 0.3, 0.2, 0.15, 0.1),
    "jpeg_compression": (25, 20, 15, 10, 7),
    "impulse_noise": (0.01, 0.015, 0.02, 0.025, 0.03),
    "gaussian_blur": (13, 15, 17, 21, 25),
    "brightness_up": (1.3, 1.4, 1.5, 1.6, 1.7),
    "brightness_down": (0.8, 0.7, 0.6, 0.5, 0.4),
    "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
    "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
}

_OCT: Table = {
    "pixelate": (0.3, 0.25, 0.2, 0.15, 0.1),
    "jpeg_compression": (30, 15, 10, 7, 5),
    "speckle_noise": (0.15, 0.3, 0.4, 0.5, 0.6),
    "defocus_blur": ((0.5, 0.6), (1, 0.5), (1.5, 0.1), (2, 0.5), (2.5, 0.1)),
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "contrast_down": (0.6, 0.4, 0.3, 0.2, 0.15),
}

_BREAST: Table = {
    "pixelate": (0.3, 0.25, 0.2, 0.15, 0.1),
    "jpeg_compression": (50, 30, 15, 10, 7),
    "speckle_noise": (0.1, 0.15, 0.2, 0.25, 0.3),
    "motion_blur": ((5, 5), (9, 7), (9, 10), (13, 10), (17, 12)),
    "brightness_up": (1.4, 1.5, 1.6, 1.8, 2.0),
    "brightness_down": (0.55, 0.5, 0.45, 0.4, 0.3),
    "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
}

_CHEST: Table = {
    "pixelate": (0.3, 0.25, 0.2, 0.15, 0.1),
    "jpeg_compression": (50, 30, 15, 10, 7),
    "gaussian_noise": (0.04, 0.08, 0.12, 0.18, 0.26),
    "speckle_noise": (0.05, 0.15, 0.2, 0.35, 0.45),
    "impulse_noise": (0.01, 0.03, 0.06, 0.09, 0.17),
    "shot_noise": (60, 25, 18, 10, 5),
    "gaussian_blur": (3, 5, 7, 9, 11),
    "brightness_up": (1.1, 1.2, 1.3, 1.4, 1.5),
    "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
    "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
    "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    "gamma_corr_up": (1.1, 1.2, 1.3, 1.4, 1.6),
    "gamma_corr_down": (0.9, 0.8, 0.7, 0.6, 0.4),
}

_PNEUMONIA: Table = {
    **_CHEST,
    "pixelate": (0.8, 0.7, 0.6, 0.5, 0.4),
    "gaussian_noise": (0.04, 0.05, 0.06, 0.07, 0.08),
    "speckle_noise": (0.05, 0.07, 0.1, 0.15, 0.2),
    "impulse_noise": (0.005, 0.01, 0.013, 0.017, 0.02),
    "shot_noise": (300, 200, 150, 100, 80),
}

_ORGAN: Table = {
    "pixelate": (0.7, 0.6, 0.5, 0.4, 0.35),
    "jpeg_compression": (50, 30, 15, 10, 7),
    "gaussian_noise": (0.04, 0.08, 0.12, 0.16, 0.2),
    "speckle_noise": (0.05, 0.1, 0.2, 0.3, 0.4),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.08),
    "shot_noise": (200, 100, 50, 25, 15),
    "gaussian_blur": (11, 13, 15, 17, 21),
    "brightness_up": (1.2, 1.3, 1.4, 1.5, 1.6),
    "brightness_down": (0.8, 0.75, 0.7, 0.65, 0.6),
    "contrast_up": (1.3, 1.4, 1.6, 1.7, 1.8),
    "contrast_down": (0.8, 0.7, 0.6, 0.55, 0.5),
    "gamma_corr_up": (1.3, 1.4, 1.6, 1.8, 2.0),
    "gamma_corr_down": (0.9, 0.8, 0.7, 0.6, 0.4),
}

CATALOGUES: dict[str, Table] = {
    "pathmnist": _PATH,
    "bloodmnist": _BLOOD,
    "dermamnist": _DERMA,
    "retinamnist": _RETINA,
    "tissuemnist": _TISSUE,
    "octmnist": _OCT,
    "breastmnist": _BREAST,
    "chestmnist": _CHEST,
    "pneumoniamnist": _PNEUMONIA,
    "organamnist": _ORGAN,
    "organcmnist": _ORGAN,
    "organsmnist": _ORGAN,
}

RGB_DATASETS = frozenset({"pathmnist", "bloodmnist", "dermamnist", "retinamnist"})

MODALITIES: dict[str, str] = {
    "histopathology": "pathmnist",
    "blood_smear": "bloodmnist",
    "dermoscopy": "dermamnist",
    "fundus": "retinamnist",
    "kidney_microscopy": "tissuemnist",
    "oct": "octmnist",
    "breast_ultrasound": "breastmnist",
    "chest_xray": "chestmnist",
    "pediatric_chest_xray": "pneumoniamnist",
    "abdominal_ct": "organamnist",
}

GROUPS: dict[str, tuple[str, ...]] = {
    "digital": ("pixelate", "jpeg_compression"),
    "noise": ("gaussian_noise", "speckle_noise", "impulse_noise", "shot_noise"),
    "blur": ("defocus_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
    "color": ("brightness_up", "brightness_down", "contrast_up", "contrast_down", "saturate"),
    "task-specific": ("stain_deposit", "bubble", "black_corner", "characters",
                      "gamma_corr_up", "gamma_corr_down"),
}


def catalogue(dataset: str) -> Table:
    """The severity table of `dataset`; KeyError naming the valid datasets."""
    if dataset not in CATALOGUES:
        raise KeyError(f"unknown MedMNIST dataset {dataset!r}; expected one of {', '.join(CATALOGUES)}")
    return CATALOGUES[dataset]


def level(dataset: str, corruption: str, severity: int) -> Any:
    """The raw parameter of `corruption` at `severity` (1..5) in `dataset`'s table."""
    table = catalogue(dataset)
    if corruption not in table:
        raise KeyError(f"{dataset} has no corruption {corruption!r}; expected one of {', '.join(table)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    return table[corruption][severity - 1]
