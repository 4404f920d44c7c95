"""`shiftforge export`: a built release in another benchmark's file layout."""

from __future__ import annotations

import argparse

from pipeline.release.export import FORMATS, ExportError, export_medmnist_c


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a built release in another benchmark's layout (medmnist-c)",
        description="medmnist-c: one {dataset}/{corruption}.npz per medical corruption with test_images "
                    "(severity-major: row i + s*N) and test_labels, loadable by code written for MedMNIST-C.")
    p.add_argument("release", help="release folder (the --out of shiftforge build)")
    p.add_argument("--format", choices=FORMATS, default="medmnist-c",
                   help="output layout (default: medmnist-c)")
    p.add_argument("--out", required=True, help="folder to write the files into")
    p.add_argument("--no-compress", action="store_true", help="store the arrays uncompressed (faster)")
    p.set_defaults(func=cmd_export)



def cmd_export(args: argparse.Namespace) -> int:
    try:
        files = export_medmnist_c(args.release, args.out, compress=not args.no_compress)
    except ExportError as exc:
        print(f"export failed: {exc}")
        return 1
    for f in files:
        labels = f"test_labels {f.label_shape}" if f.label_shape else "no test_labels (unlabelled)"
        print(f"{f.path}: test_images {f.shape}, {labels}, severities {f.severities}")
    return 0
