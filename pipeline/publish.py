"""Publish a release folder to a Hugging Face Hub dataset repo, uploading only what changed.

Steps: collect the files provenance vouches for (refusing a folder that does
not match it) → read the remote head, tree and tags → plan uploads (local
sha256 differs from the remote LFS oid / git blob id), deletions (remote shards
gone locally) and the release tag → commit in batches of fewer than 100 files,
each with `parent_commit` so a concurrent change fails instead of being
overwritten → tag. Every run re-plans against the remote, so an interrupted
publish resumes where it stopped. The token comes from huggingface_hub's usual
sources and is scrubbed from every message this module raises.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPO_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
METADATA_FILES = ("README.md", "croissant.json", "provenance.json", "samples.parquet")
MAX_FILES_PER_COMMIT = 99
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
CONFLICT_STATUS = frozenset({409, 412})


class PublishError(Exception):
    """Publishing failed; nothing already committed is lost, rerunning resumes."""


class ReleaseRefused(PublishError):
    """The release folder or the request is not fit to publish; nothing was uploaded."""


@dataclass(frozen=True)
class LocalFile:
    path: str           # path in the repo, POSIX
    local: Path
    sha256: str
    size: int


@dataclass
class PublishPlan:
    repo_id: str
    repo_exists: bool
    head: str | None
    tag: str
    tag_target: str | None          # where the tag already points, if it exists
    uploads: list[LocalFile] = field(default_factory=list)
    deletions: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.uploads or self.deletions)

    def describe(self) -> list[str]:
        lines = [] if self.repo_exists else [f"create dataset repo {self.repo_id}"]
        lines += [f"upload {f.path} ({f.size} bytes, sha256 {f.sha256[:12]})" for f in self.uploads]
        lines += [f"delete {path}" for path in self.deletions]
        if self.tag_target is None:
            lines.append(f"tag {self.tag}")
        lines.append(f"{len(self.unchanged)} file(s) unchanged")
        return lines


@dataclass
class PublishResult:
    plan: PublishPlan
    commits: list[str]
    head: str | None
    tagged: bool


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_blob_sha(path: Path) -> str:
    """The git object id of a regular (non-LFS) file, as the Hub reports it."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def release_tag(provenance: dict[str, Any]) -> str:
    """`<version>` for the first build of a version, `<version>-r<N>` for regenerated revisions."""
    version = provenance["release"]["version"]
    revision = int(provenance.get("revision", 1))
    return version if revision <= 1 else f"{version}-r{revision}"


# -- 1. what may be uploaded ----------------------------------------------------------------------
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
    files: list[LocalFile] = []
    for path, shard in sorted((listed | stage_files).items()):
        local = _checked_path(root, path, problems)
        if local is None:
            continue
        sha = file_sha256(local)
        if sha != shard.get("sha256"):
            expected = str(shard.get("sha256"))[:12]
            problems.append(f"{path}: sha256 {sha[:12]} differs from provenance ({expected})")
            continue
        files.append(LocalFile(path, local, sha, local.stat().st_size))
    problems += _verify_problems(root)
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


def _verify_problems(root: Path) -> list[str]:
    """What `shiftforge verify` finds wrong (shard hashes, sample counts, counts adding up)."""
    from pipeline.verify import verify_release

    try:
        return verify_release(root).problems
    except (OSError, KeyError, ValueError) as exc:
        return [f"verify could not read the release: {type(exc).__name__}: {exc}"]


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


# -- 2. what the remote holds ---------------------------------------------------------------------
def plan_publish(api: Any, repo_id: str, provenance: dict[str, Any], files: list[LocalFile]) -> PublishPlan:
    from huggingface_hub.errors import RepositoryNotFoundError

    tag = release_tag(provenance)
    try:
        head = api.repo_info(repo_id, repo_type="dataset", revision="main").sha
    except RepositoryNotFoundError:
        plan = PublishPlan(repo_id, repo_exists=False, head=None, tag=tag, tag_target=None)
        plan.uploads = list(files)
        return plan
    remote = {entry.path: entry for entry in api.list_repo_tree(repo_id, repo_type="dataset", revision=head,
                                                                recursive=True)
              if hasattr(entry, "blob_id")}
    tags = {ref.name: ref.target_commit for ref in api.list_repo_refs(repo_id, repo_type="dataset").tags}
    plan = PublishPlan(repo_id, repo_exists=True, head=head, tag=tag, tag_target=tags.get(tag))
    for local in files:
        entry = remote.get(local.path)
        (plan.unchanged if entry is not None and _same_content(local, entry) else plan.uploads).append(local)
    local_paths = {f.path for f in files}
    # what the release folder manages: shards, and the folders stage files live in
    managed = ("data/", *sorted({f["path"].split("/")[0] + "/" for f in provenance.get("files", [])}))
    plan.deletions = sorted(p for p in remote if p.startswith(managed) and p not in local_paths)
    return plan


def _same_content(local: LocalFile, remote: Any) -> bool:
    if remote.lfs is not None:
        return remote.lfs.sha256 == local.sha256
    return remote.size == local.size and remote.blob_id == git_blob_sha(local.local)


def check_tag(plan: PublishPlan) -> None:
    """Tags are never re-pointed: refuse before uploading when the tag would have to move."""
    if plan.tag_target is None:
        return
    if plan.changed or plan.tag_target != plan.head:
        raise ReleaseRefused(
            f"tag {plan.tag!r} already exists at commit {plan.tag_target[:12]} and tags are never moved; "
            f"the repo's main is at {str(plan.head)[:12]}{' with local changes' if plan.changed else ''}. "
            "Bump the release version (or regenerate to get a new revision) and publish again.")


# -- 3. commits ----------------------------------------------------------------------------------
def commit_batches(plan: PublishPlan, batch_size: int = MAX_FILES_PER_COMMIT) -> list[list[LocalFile | str]]:
    """Shards first, metadata (card, croissant, provenance, parquet) and deletions last, so the
    card on the Hub never names shards that are not there yet."""
    shards = [f for f in plan.uploads if f.path.startswith("data/")]
    closing: list[LocalFile | str] = [f for f in plan.uploads if not f.path.startswith("data/")]
    closing += plan.deletions
    ops: list[LocalFile | str] = [*shards, *closing]
    return [ops[i:i + batch_size] for i in range(0, len(ops), batch_size)]


def _operations(batch: list[LocalFile | str]) -> list[Any]:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    ops: list[Any] = []
    for item in batch:
        if isinstance(item, str):
            ops.append(CommitOperationDelete(path_in_repo=item))
            continue
        op = CommitOperationAdd(path_in_repo=item.path, path_or_fileobj=str(item.local))
        op.upload_info.sha256 = bytes.fromhex(item.sha256)   # already hashed; spare a second read
        ops.append(op)
    return ops


def _commit(api: Any, plan: PublishPlan, batch: list[LocalFile | str], parent: str, message: str,
            retry: RetryPolicy) -> str:
    def attempt() -> str:
        return api.create_commit(plan.repo_id, _operations(batch), commit_message=message,
                                 repo_type="dataset", parent_commit=parent).oid

    def landed() -> str | None:
        # A transient error may hide a commit that did land: accept it only if main moved
        # to exactly this batch's content, otherwise someone else committed.
        head = api.repo_info(plan.repo_id, repo_type="dataset", revision="main").sha
        if head == parent:
            return None
        paths = [item if isinstance(item, str) else item.path for item in batch]
        infos = api.get_paths_info(plan.repo_id, paths, repo_type="dataset", revision=head)
        remote = {entry.path: entry for entry in infos}
        for item in batch:
            if isinstance(item, str):
                ours = item not in remote
            else:
                ours = item.path in remote and _same_content(item, remote[item.path])
            if not ours:
                return _raise_conflict(plan, parent, head)
        return head

    return retry.run(attempt, what=f"commit to {plan.repo_id}", recover=landed)


def _raise_conflict(plan: PublishPlan, parent: str, head: str | None) -> str:
    raise PublishError(
        f"{plan.repo_id}: main moved from {parent[:12]} to {str(head)[:12]} while publishing (a concurrent "
        "change); nothing was overwritten. Rerun publish to re-plan against the new state.")


@dataclass
class RetryPolicy:
    """Retry transient Hub failures (5xx, 429, connection errors) with exponential backoff."""

    attempts: int = 5
    first_wait: float = 1.0
    sleep: Callable[[float], None] = time.sleep

    def run(self, call: Callable[[], Any], what: str, recover: Callable[[], Any] | None = None) -> Any:
        for attempt in range(1, self.attempts + 1):
            try:
                return call()
            except Exception as exc:  # classify, then re-raise what is not transient
                status = _http_status(exc)
                if status in CONFLICT_STATUS:
                    raise PublishError(f"{what} refused: the repo changed since it was read "
                                       f"(HTTP {status}); nothing was overwritten, rerun to re-plan") from exc
                if not _is_transient(exc, status) or attempt == self.attempts:
                    raise
                wait = self.first_wait * 2 ** (attempt - 1)
                log.warning("%s failed (%s); retry %d/%d in %.1fs", what, status or type(exc).__name__,
                            attempt, self.attempts - 1, wait)
                self.sleep(wait)
                if recover is not None and (result := recover()) is not None:
                    return result
        raise AssertionError("unreachable")


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _is_transient(exc: BaseException, status: int | None) -> bool:
    if status is not None:
        return status in TRANSIENT_STATUS
    transport: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    try:
        import httpx2
        transport += (httpx2.TransportError,)
    except ImportError:
        pass
    return isinstance(exc, transport)


# -- 4. the whole flow ---------------------------------------------------------------------------
def publish_release(release_dir: str | Path, repo_id: str | None = None, *, private: bool | None = None,
                    dry_run: bool = False, api: Any = None, batch_size: int = MAX_FILES_PER_COMMIT,
                    retry: RetryPolicy | None = None) -> PublishResult:
    """Publish `release_dir` to the dataset repo `repo_id` (default: the manifest's hub.repo).

    Raises ReleaseRefused before any upload for bad input (no token, invalid repo
    id, a folder that does not match its provenance, a tag that would move), and
    PublishError for failures while publishing; neither message contains the token.
    """
    from huggingface_hub import HfApi, get_token

    api = api or HfApi()
    token = api.token or get_token()
    try:
        return _publish(api, token, release_dir, repo_id, private, dry_run, batch_size,
                        retry or RetryPolicy())
    except PublishError as exc:
        raise type(exc)(_redact(str(exc), token)) from None
    except Exception as exc:
        raise PublishError(_redact(f"{type(exc).__name__}: {exc}", token)) from None


def _publish(api: Any, token: str | None, release_dir: str | Path, repo_id: str | None, private: bool | None,
             dry_run: bool, batch_size: int, retry: RetryPolicy) -> PublishResult:
    provenance, files = collect_release_files(release_dir)
    hub = (provenance.get("manifest") or {}).get("hub") or {}
    repo_id = repo_id or hub.get("repo")
    if not repo_id or not REPO_ID_PATTERN.match(repo_id) or ".." in repo_id:
        raise ReleaseRefused(
            f"repo id must look like 'org/name' (letters, digits, '-', '_', '.'); got {repo_id!r}")
    if token is None and not dry_run:
        raise ReleaseRefused("no Hugging Face token: set HF_TOKEN or run `hf auth login` "
                             "(nothing was uploaded)")
    plan = retry.run(lambda: plan_publish(api, repo_id, provenance, files), what=f"read {repo_id}")
    check_tag(plan)
    if dry_run:
        return PublishResult(plan, commits=[], head=plan.head, tagged=False)
    head = plan.head
    if not plan.repo_exists:
        private = hub.get("private", False) if private is None else private
        retry.run(lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True),
                  what=f"create {repo_id}")
        head = api.repo_info(repo_id, repo_type="dataset", revision="main").sha
    commits: list[str] = []
    batches = commit_batches(plan, batch_size)
    for number, batch in enumerate(batches, 1):
        message = f"Publish {plan.tag} ({number}/{len(batches)}): {len(batch)} file(s)"
        new_head = _commit(api, plan, batch, head, message, retry)
        if new_head != head:
            commits.append(new_head)
        head = new_head
        log.info("%s: committed %s (%d/%d)", repo_id, head[:12], number, len(batches))
    tagged = plan.tag_target is None
    if tagged:
        _create_tag(api, repo_id, plan.tag, head, retry)
    return PublishResult(plan, commits=commits, head=head, tagged=tagged)


def _create_tag(api: Any, repo_id: str, tag: str, head: str, retry: RetryPolicy) -> None:
    retry.run(lambda: api.create_tag(repo_id, tag=tag, revision=head, repo_type="dataset", exist_ok=True),
              what=f"tag {tag}")
    refs = retry.run(lambda: api.list_repo_refs(repo_id, repo_type="dataset"), what=f"read tags of {repo_id}")
    target = {ref.name: ref.target_commit for ref in refs.tags}
    if target.get(tag) != head:
        raise PublishError(f"tag {tag!r} appeared at {str(target.get(tag))[:12]} (not {head[:12]}) while "
                           "publishing; it was left untouched")


def _redact(text: str, token: str | None) -> str:
    if token:
        text = text.replace(token, "***")
    return re.sub(r"hf_[A-Za-z0-9]{30,}", "hf_***", text)   # any other user-access token
