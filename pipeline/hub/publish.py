"""Publish a release folder to a Hugging Face Hub dataset repo, uploading only what changed.

Steps, all under the release lock that `regenerate` holds: collect the files
provenance vouches for (refusing a folder that does not match it) → check the
card and the token → read the remote head, tree and tags → plan uploads (local
sha256 differs from the remote LFS/Xet oid or git blob id), deletions (remote
shards gone locally, only in a repo whose provenance names this release) and
the release tag → check the Hub's limits and let the Hub validate the card →
commit in batches of fewer than 100 files, each file re-hashed just before its
upload and each commit with `parent_commit` so a concurrent change fails
instead of being overwritten → tag. Uploads go through Xet when `hf_xet` is
installed (the client's default), else LFS; `transfer="lfs"` forces LFS.
Every run re-plans against the remote, so an interrupted publish resumes where
it stopped. The token comes from huggingface_hub's usual sources and is
scrubbed from every message this module raises.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.hub.checks import LocalFile, collect_release_files, file_sha256
from pipeline.hub.retry import (  # noqa: F401 - PublishError & co. are part of this module's API
    PublishError,
    ReleaseRefused,
    RemoteChanged,
    RetryPolicy,
    WriteDenied,
)

log = logging.getLogger(__name__)

REPO_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
MAX_FILES_PER_COMMIT = 99


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
    refused_deletions: list[str] = field(default_factory=list)   # not ours to delete (see plan_deletions)
    remote_sizes: dict[str, int] = field(default_factory=dict)
    transfer: str = "xet"

    @property
    def changed(self) -> bool:
        return bool(self.uploads or self.deletions)

    def describe(self) -> list[str]:
        lines = [] if self.repo_exists else [f"create dataset repo {self.repo_id}"]
        lines += [f"upload {f.path} ({f.size} bytes, sha256 {f.sha256[:12]})" for f in self.uploads]
        lines += [f"delete {path}" for path in self.deletions]
        lines += [f"delete {path} (refused: not this release's repo; pass --allow-delete)"
                  for path in self.refused_deletions]
        if self.tag_target is None:
            lines.append(f"tag {self.tag}")
        lines.append(f"{len(self.unchanged)} file(s) unchanged; uploads go through {self.transfer}")
        return lines


@dataclass
class PublishResult:
    plan: PublishPlan
    commits: list[str]
    head: str | None
    tagged: bool


def git_blob_sha(path: Path) -> str:
    """The git object id of a regular (non-LFS) file, as the Hub reports it."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def release_tag(provenance: dict[str, Any]) -> str:
    """`<version>` for the first build of a version, `<version>-r<N>` for regenerated revisions."""
    version = provenance["release"]["version"]
    revision = int(provenance.get("revision", 1))
    return version if revision <= 1 else f"{version}-r{revision}"


# -- 2. what the remote holds ---------------------------------------------------------------------
def plan_publish(api: Any, repo_id: str, provenance: dict[str, Any], files: list[LocalFile],
                 allow_delete: bool = False) -> PublishPlan:
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
    plan.remote_sizes = {path: int(entry.size or 0) for path, entry in remote.items()}
    for local in files:
        entry = remote.get(local.path)
        (plan.unchanged if entry is not None and _same_content(local, entry) else plan.uploads).append(local)
    local_paths = {f.path for f in files}
    # what the release folder manages: shards, and the folders stage files live in
    managed = ("data/", *sorted({f["path"].split("/")[0] + "/" for f in provenance.get("files", [])}))
    deletions = sorted(p for p in remote if p.startswith(managed) and p not in local_paths)
    if deletions and not allow_delete and not _same_release(api, repo_id, head, provenance):
        plan.refused_deletions = deletions
    else:
        plan.deletions = deletions
    return plan


def _same_release(api: Any, repo_id: str, head: str, provenance: dict[str, Any]) -> bool:
    """Deleting is safe only in a repo whose shiftforge provenance.json names this same release."""
    from pipeline.hub.checks import remote_release_name

    return remote_release_name(api, repo_id, head) == provenance["release"]["name"]


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
    """The batch's commit operations, each file re-hashed now: the sha256 the client sends (and the
    Hub checks the upload against) is the file's content at upload time, not at planning time."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    ops: list[Any] = []
    for item in batch:
        if isinstance(item, str):
            ops.append(CommitOperationDelete(path_in_repo=item))
            continue
        sha = file_sha256(item.local)
        if sha != item.sha256:
            raise PublishError(f"{item.path} changed on disk while publishing (sha256 {item.sha256[:12]} when "
                               f"planned, {sha[:12]} now); it was not uploaded. Rerun publish after the "
                               "release is rebuilt and verifies")
        op = CommitOperationAdd(path_in_repo=item.path, path_or_fileobj=str(item.local))
        op.upload_info.sha256 = bytes.fromhex(sha)
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

    return retry.run(attempt, what=f"upload and commit {len(batch)} file(s) to {plan.repo_id}", recover=landed)


def _raise_conflict(plan: PublishPlan, parent: str, head: str | None) -> str:
    raise RemoteChanged(
        f"{plan.repo_id}: main moved from {parent[:12]} to {str(head)[:12]} while publishing (a concurrent "
        "change); nothing was overwritten. Rerun publish to re-plan against the new state.")


# -- 4. the whole flow ---------------------------------------------------------------------------
@dataclass
class PublishOptions:
    private: bool | None = None
    dry_run: bool = False
    allow_delete: bool = False
    transfer: str = "auto"            # auto (Xet when hf_xet is installed, else LFS) | xet | lfs
    timeout: float | None = None      # seconds per HTTP operation (default $SHIFTFORGE_HUB_TIMEOUT or 300)
    batch_size: int = MAX_FILES_PER_COMMIT


def publish_release(release_dir: str | Path, repo_id: str | None = None, *, api: Any = None,
                    retry: RetryPolicy | None = None, **options: Any) -> PublishResult:
    """Publish `release_dir` to the dataset repo `repo_id` (default: the manifest's hub.repo);
    `options` are PublishOptions' fields.

    Raises ReleaseRefused before any upload for bad input (no token, invalid repo id, a folder
    that does not match its provenance, a card the Hub would reject, limits, a tag that would
    move, deletions in a repo that is not this release's), WriteDenied when the token may not
    write, and PublishError for other failures; no message contains the token.
    """
    from huggingface_hub import HfApi, get_token

    from pipeline.hub.env import release_lock, transfer_path

    opts = PublishOptions(**options)
    api = api or HfApi()
    token = api.token or get_token()
    try:
        with release_lock(release_dir), transfer_path(opts.transfer) as transfer:
            return _publish(api, token, Path(release_dir), repo_id, opts, retry or RetryPolicy(), transfer)
    except PublishError as exc:
        raise type(exc)(_redact(str(exc), token)) from None
    except Exception as exc:
        raise PublishError(_redact(_one_line(exc), token)) from None


@contextmanager
def _denied_means(repo_id: str) -> Iterator[None]:
    """An HTTP 401/403 from any write (create, preupload, LFS batch, Xet token, commit, tag) is the
    token's permissions, not a transient failure: say so in one line."""
    from pipeline.hub.retry import DENIED_STATUS, http_status, storage_refused

    try:
        yield
    except PublishError:
        raise
    except Exception as exc:
        if (status := http_status(exc)) in DENIED_STATUS and not storage_refused(exc):
            raise WriteDenied(f"token cannot write to {repo_id} (HTTP {status}); use a token with write "
                              "access to it (HF_TOKEN or `hf auth login`)") from None
        raise


def _publish(api: Any, token: str | None, root: Path, repo_id: str | None, opts: PublishOptions,
             retry: RetryPolicy, transfer: str) -> PublishResult:
    from pipeline.hub import checks
    from pipeline.hub.env import hub_timeout, use_finite_timeouts

    use_finite_timeouts(hub_timeout(opts.timeout))
    provenance, files = collect_release_files(root)
    repo_id = _repo_id(repo_id, provenance)
    if token is None and not opts.dry_run:
        raise ReleaseRefused("no Hugging Face token: set HF_TOKEN or run `hf auth login` (nothing was uploaded)")
    checks.refuse(checks.card_problems(root / "README.md", [f.path for f in files]), "the dataset card")
    if token is not None and (problem := retry.run(lambda: checks.write_access_problem(api, repo_id),
                                                   what="read the token's permissions")):
        raise WriteDenied(problem)
    plan = retry.run(lambda: plan_publish(api, repo_id, provenance, files, opts.allow_delete),
                     what=f"read {repo_id}")
    plan.transfer = transfer
    check_tag(plan)
    _check_limits(plan, files)
    if opts.dry_run:
        return PublishResult(plan, commits=[], head=plan.head, tagged=False)
    if plan.refused_deletions:
        raise ReleaseRefused(
            f"{repo_id} holds {len(plan.refused_deletions)} file(s) under data/ that this release does not "
            f"have (e.g. {plan.refused_deletions[0]}) and no shiftforge provenance.json of release "
            f"{provenance['release']['name']!r}; not deleting them. Pass --allow-delete to delete them, or "
            "publish to another --repo (nothing uploaded)")
    with _denied_means(repo_id):
        _validate_card_on_hub(api, root / "README.md", retry)
        head = plan.head if plan.repo_exists else _create_repo(api, repo_id, provenance, opts.private, retry)
        return _commit_and_tag(api, plan, head, opts.batch_size, retry)


def _repo_id(repo_id: str | None, provenance: dict[str, Any]) -> str:
    hub = (provenance.get("manifest") or {}).get("hub") or {}
    repo_id = repo_id or hub.get("repo")
    if not repo_id or not REPO_ID_PATTERN.match(repo_id) or ".." in repo_id:
        raise ReleaseRefused(f"repo id must look like 'org/name' (letters, digits, '-', '_', '.'); got {repo_id!r}")
    return repo_id


def _check_limits(plan: PublishPlan, files: list[LocalFile]) -> None:
    from pipeline.hub.checks import limit_problems, refuse

    final = {p: s for p, s in plan.remote_sizes.items() if p not in plan.deletions}
    final.update({f.path: f.size for f in files})
    refusals, warnings = limit_problems(final, {f.path: f.size for f in plan.uploads})
    for warning in warnings:
        log.warning("%s: %s", plan.repo_id, warning)
    refuse(refusals, f"{plan.repo_id} would exceed the Hub's limits")


def _validate_card_on_hub(api: Any, readme: Path, retry: RetryPolicy) -> None:
    from pipeline.hub.checks import validate_card_on_hub

    try:
        retry.run(lambda: validate_card_on_hub(api, readme), what="validate the dataset card")
    except ValueError as exc:
        reason = " ".join(str(exc).split())
        raise ReleaseRefused(f"the Hub rejects the dataset card: {reason} (nothing uploaded)") from None


def _create_repo(api: Any, repo_id: str, provenance: dict[str, Any], private: bool | None,
                 retry: RetryPolicy) -> str:
    from huggingface_hub.errors import RepositoryNotFoundError

    hub = (provenance.get("manifest") or {}).get("hub") or {}
    private = hub.get("private", False) if private is None else private
    retry.run(lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True),
              what=f"create {repo_id}")
    try:
        return retry.run(lambda: api.repo_info(repo_id, repo_type="dataset", revision="main").sha,
                         what=f"read {repo_id}")
    except RepositoryNotFoundError:
        raise WriteDenied(f"token cannot write to {repo_id}: the repo exists but this token cannot see it "
                          "(private or gated)") from None


def _commit_and_tag(api: Any, plan: PublishPlan, head: str, batch_size: int,
                    retry: RetryPolicy) -> PublishResult:
    commits: list[str] = []
    batches = commit_batches(plan, batch_size)
    for number, batch in enumerate(batches, 1):
        message = f"Publish {plan.tag} ({number}/{len(batches)}): {len(batch)} file(s)"
        new_head = _commit(api, plan, batch, head, message, retry)
        if new_head != head:
            commits.append(new_head)
        head = new_head
        log.info("%s: committed %s (%d/%d)", plan.repo_id, head[:12], number, len(batches))
    tagged = plan.tag_target is None
    if tagged:
        _create_tag(api, plan.repo_id, plan.tag, head, retry)
    return PublishResult(plan, commits=commits, head=head, tagged=tagged)


def _create_tag(api: Any, repo_id: str, tag: str, head: str, retry: RetryPolicy) -> None:
    retry.run(lambda: api.create_tag(repo_id, tag=tag, revision=head, repo_type="dataset", exist_ok=True),
              what=f"tag {tag}")
    refs = retry.run(lambda: api.list_repo_refs(repo_id, repo_type="dataset"), what=f"read tags of {repo_id}")
    target = {ref.name: ref.target_commit for ref in refs.tags}
    if target.get(tag) != head:
        raise PublishError(f"tag {tag!r} appeared at {str(target.get(tag))[:12]} (not {head[:12]}) while "
                           "publishing; it was left untouched")


def _one_line(exc: BaseException) -> str:
    """The first line of the error, with the HTTP status and the Hub's message from its causes."""
    from pipeline.hub.retry import causes, http_status

    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(":")
    if step := getattr(exc, "publish_step", None):
        text = f"{step} failed: {text}"
    if (status := http_status(exc)) is not None and str(status) not in text:
        said = next((e.server_message for e in causes(exc) if getattr(e, "server_message", None)), None)
        text += f" (HTTP {status}{': ' + said.splitlines()[0] if said else ''})"
    if status == 404 and "xet-write-token" in str(exc):
        text += "; this Hub does not serve Xet uploads: publish with --transfer lfs"
    return text


def _redact(text: str, token: str | None) -> str:
    if token:
        text = text.replace(token, "***")
    return re.sub(r"hf_[A-Za-z0-9]{30,}", "hf_***", text)   # any other user-access token
