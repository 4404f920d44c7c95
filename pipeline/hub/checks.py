"""What publish checks before the first upload: which files the release vouches for, the
dataset card, the Hub's size limits, whose repo it is (before deleting anything) and whether
the token may write.

Limits are the Hub's documented recommendations ("Repository limitations and
recommendations"): fewer than 100k files per repo, fewer than 10k entries per
folder, files under 20 GB, TB-scale repos by arrangement. The card is checked
with huggingface_hub's own `DatasetCard` parser, then by the Hub's own
validator (`/api/validate-yaml`, which the client otherwise calls only when the
card is committed, i.e. after every shard has uploaded).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.hub.retry import ReleaseRefused

log = logging.getLogger(__name__)

METADATA_FILES = ("README.md", "croissant.json", "provenance.json", "samples.parquet")

MAX_FILES_PER_REPO = 100_000
MAX_ENTRIES_PER_FOLDER = 10_000
LARGE_FILE_BYTES = 20 * 1000**3
LARGE_REPO_BYTES = 1000**4
SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")
LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")


@dataclass(frozen=True)
class LocalFile:
    path: str           # path in the repo, POSIX
    local: Path
    sha256: str
    size: int


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- what may be uploaded --------------------------------------------------------------------------
def collect_release_files(release_dir: str | Path) -> tuple[dict[str, Any], list[LocalFile]]:
    """The files of a release that provenance vouches for, with their sha256.

    Refuses (ReleaseRefused) a folder without provenance.json, a shard or
    stage file (e.g. annotations/<config>/instances.json) whose sha256 differs
    from provenance, a file under data/ that provenance does not list, or any
    symlink among the files to upload.
    """
    root = Path(release_dir).resolve()
    provenance_path = root / "provenance.json"
    if not provenance_path.is_file():
        raise ReleaseRefused(f"{root} is not a release folder: provenance.json is missing")
    provenance = json.loads(provenance_path.read_text())
    listed = {shard["path"]: shard for shard in provenance.get("shards", []) if shard.get("path")}
    stage_files = {entry["path"]: entry for entry in provenance.get("files", [])}
    problems: list[str] = []
    on_disk = {p.relative_to(root).as_posix() for p in (root / "data").rglob("*")
               if p.is_file() or p.is_symlink()}
    problems += [f"{path}: not listed in provenance.json" for path in sorted(on_disk - set(listed))]
    verified, hashes = _verify(root)      # verify hashes every shard: its sha256 are reused here
    files: list[LocalFile] = []
    for path, shard in sorted((listed | stage_files).items()):
        local = _checked_path(root, path, problems)
        if local is None:
            continue
        sha = hashes.get(path) or file_sha256(local)
        if sha != shard.get("sha256"):
            expected = str(shard.get("sha256"))[:12]
            problems.append(f"{path}: sha256 {sha[:12]} differs from provenance ({expected})")
            continue
        files.append(LocalFile(path, local, sha, local.stat().st_size))
    problems += verified
    for name in METADATA_FILES:
        if (root / name).exists() or (root / name).is_symlink():
            local = _checked_path(root, name, problems)
            if local is not None:
                files.append(LocalFile(name, local, file_sha256(local), local.stat().st_size))
    for local in sorted((root / "results").glob("*")) if (root / "results").is_dir() else []:
        if local.is_file() and not local.is_symlink():  # evaluate's results, plots and predictions
            files.append(LocalFile(f"results/{local.name}", local, file_sha256(local), local.stat().st_size))
    if problems:
        shown = "\n  ".join(problems[:20])
        raise ReleaseRefused(f"{root} does not match its provenance; nothing uploaded:\n  {shown}")
    return provenance, files


def _verify(root: Path) -> tuple[list[str], dict[str, str]]:
    """What `shiftforge verify` finds wrong (shard hashes, sample counts, counts adding up), and
    the sha256 it computed for each shard."""
    from pipeline.release.verify import verify_release

    try:
        report = verify_release(root)
    except (OSError, KeyError, ValueError) as exc:
        return [f"verify could not read the release: {type(exc).__name__}: {exc}"], {}
    return report.problems, report.hashes


def _checked_path(root: Path, relative: str, problems: list[str]) -> Path | None:
    local = root / relative
    if local.is_symlink():
        problems.append(f"{relative}: is a symlink (only regular files inside the release are published)")
        return None
    if not local.is_file():
        problems.append(f"{relative}: listed but missing")
        return None
    if root not in local.resolve().parents:
        problems.append(f"{relative}: resolves outside the release folder")
        return None
    return local


# -- the dataset card ----------------------------------------------------------------------------
def card_problems(readme: Path, repo_paths: Iterable[str]) -> list[str]:
    """What is wrong with the card's YAML metadata: parse errors, license, task categories, and
    `configs` whose data_files are malformed or match none of the files the repo will hold."""
    from huggingface_hub import DatasetCard

    if not readme.is_file():
        return ["README.md (the dataset card) is missing"]
    try:
        metadata = DatasetCard.load(readme).data.to_dict()
    except Exception as exc:  # yaml.YAMLError, ValueError: the Hub would reject it the same way
        return [f"README.md: metadata does not parse: {exc}".splitlines()[0]]
    if not metadata:
        return ["README.md: no YAML metadata block (--- ... ---) at the top"]
    problems = []
    license_id = metadata.get("license")
    if not isinstance(license_id, str) or not LICENSE_ID.match(license_id):
        problems.append(f"README.md: license must be one Hub license id such as 'cc-by-4.0'; got {license_id!r}")
    tasks = metadata.get("task_categories", [])
    if not isinstance(tasks, list) or not all(isinstance(t, str) and t for t in tasks):
        problems.append(f"README.md: task_categories must be a list of task ids; got {tasks!r}")
    problems += _config_problems(metadata.get("configs", []), sorted(set(repo_paths)))
    return problems


def _config_problems(configs: Any, paths: list[str]) -> list[str]:
    if not isinstance(configs, list):
        return [f"README.md: configs must be a list; got {type(configs).__name__}"]
    problems, names = [], Counter()
    for index, config in enumerate(configs):
        name = config.get("config_name") if isinstance(config, dict) else None
        if not isinstance(name, str) or not name:
            problems.append(f"README.md: configs[{index}] has no config_name")
            continue
        names[name] += 1
        for split, pattern in _data_files(config.get("data_files"), name, problems):
            if split is not None and not SPLIT_NAME.match(split):
                problems.append(f"README.md: config {name!r}: split name {split!r} is not a word")
            if not any(_glob(pattern).fullmatch(path) for path in paths):
                problems.append(f"README.md: config {name!r}: data_files {pattern!r} matches no file in the release")
    problems += [f"README.md: config_name {name!r} appears {n} times" for name, n in names.items() if n > 1]
    return problems


def _data_files(value: Any, name: str, problems: list[str]) -> list[tuple[str | None, str]]:
    """(split, pattern) pairs of a config's data_files: a string, a list of strings, or a list of
    {split, path} where path is a string or a list of strings."""
    if isinstance(value, str):
        return [(None, value)]
    if value is None:
        problems.append(f"README.md: config {name!r} has no data_files")
        return []
    pairs: list[tuple[str | None, str]] = []
    for item in value if isinstance(value, list) and value else [None]:
        if isinstance(item, str):
            pairs.append((None, item))
        elif isinstance(item, dict) and isinstance(item.get("split"), str) and item.get("path"):
            paths = item["path"] if isinstance(item["path"], list) else [item["path"]]
            pairs += [(item["split"], p) for p in paths if isinstance(p, str)]
        else:
            problems.append(f"README.md: config {name!r}: data_files entry {item!r} is not a path "
                            "or {split, path}")
    return pairs


def _glob(pattern: str) -> re.Pattern[str]:
    """fsspec-style glob: `**` crosses folders, `*` and `?` do not."""
    parts = re.split(r"(\*\*/?|\*|\?)", pattern)
    regex = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(regex.get(part, re.escape(part)) for part in parts))


def validate_card_on_hub(api: Any, readme: Path) -> None:
    """The Hub's own card validation (the request the client's create_commit makes when README.md
    is committed), before anything is uploaded: ValueError when the Hub rejects the card, the HTTP
    error otherwise (so a 5xx is retried, not taken for a rejection)."""
    from huggingface_hub.utils import get_session, hf_raise_for_status

    response = get_session().post(f"{api.endpoint}/api/validate-yaml", headers=api._build_hf_headers(),
                                  json={"content": readme.read_text(encoding="utf-8"), "repoType": "dataset"})
    if response.status_code == 400:
        try:
            errors = [str(error.get("message")) for error in response.json().get("errors", [])]
        except (ValueError, AttributeError):
            errors = []
        raise ValueError("; ".join(errors) or response.text[:200] or "HTTP 400")
    hf_raise_for_status(response)


# -- limits --------------------------------------------------------------------------------------
def limit_problems(final_paths: Iterable[str], sizes: dict[str, int]) -> tuple[list[str], list[str]]:
    """(refusals, warnings) for the repo as it will be after publishing."""
    paths = sorted(set(final_paths))
    refusals, warnings = [], []
    if len(paths) >= MAX_FILES_PER_REPO:
        refusals.append(f"the repo would hold {len(paths)} files; the Hub supports fewer than "
                        f"{MAX_FILES_PER_REPO} (use larger shards: output.samples_per_shard)")
    entries: dict[str, set[str]] = {}
    for path in paths:
        parts = PurePosixPath(path).parts
        for depth in range(len(parts)):
            entries.setdefault("/".join(parts[:depth]) or ".", set()).add(parts[depth])
    for folder, children in sorted(entries.items()):
        if len(children) >= MAX_ENTRIES_PER_FOLDER:
            refusals.append(f"{folder}/ would hold {len(children)} entries; the Hub supports fewer than "
                            f"{MAX_ENTRIES_PER_FOLDER} per folder (use larger shards)")
    large = [path for path, size in sizes.items() if size > LARGE_FILE_BYTES]
    if large:
        warnings.append(f"{len(large)} file(s) exceed the Hub's recommended 20 GB per file, e.g. {large[0]}")
    total = sum(sizes.values())
    if total > LARGE_REPO_BYTES:
        warnings.append(f"uploading {total / 1000**4:.1f} TB: the Hub asks TB-scale repos to be arranged "
                        "with it beforehand")
    return refusals, warnings


# -- whose repo it is ----------------------------------------------------------------------------
def remote_release_name(api: Any, repo_id: str, revision: str) -> str | None:
    """The release name in the repo's shiftforge provenance.json, or None when there is none."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import get_session, hf_raise_for_status

    url = hf_hub_url(repo_id, "provenance.json", repo_type="dataset", revision=revision, endpoint=api.endpoint)
    response = get_session().get(url, headers=api._build_hf_headers(), follow_redirects=True)
    if response.status_code == 404:
        return None
    hf_raise_for_status(response)
    try:
        provenance = json.loads(response.content)
    except ValueError:
        return None
    from pipeline.release.provenance import SCHEMA_ID

    if not isinstance(provenance, dict) or \
            not str(provenance.get("schema", "")).startswith(SCHEMA_ID.rsplit("/", 1)[0] + "/"):
        return None
    return (provenance.get("release") or {}).get("name")


# -- the token -----------------------------------------------------------------------------------
def write_access_problem(api: Any, repo_id: str) -> str | None:
    """Why the token cannot write to `repo_id` when whoami already tells (a token the Hub does
    not accept, a read-only token); else None. Fine-grained tokens are judged by the first write
    they attempt (an HTTP 401/403 becomes the same one line), not by reading their scopes here."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        info = api.whoami()
    except HfHubHTTPError as exc:
        if getattr(exc.response, "status_code", None) == 401:
            return f"token cannot write to {repo_id}: the Hub does not accept it (HTTP 401)"
        return None                      # whoami unavailable: the write itself will tell
    token = ((info.get("auth") or {}).get("accessToken")) or {}
    if token.get("role") == "read":
        return f"token cannot write to {repo_id}: it is a read-only token"
    return None


def refuse(problems: list[str], what: str) -> None:
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ReleaseRefused(f"{what}: {shown} (nothing uploaded)")
