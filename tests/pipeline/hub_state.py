"""The loopback Hub's state: repos, commits, tags, LFS objects and the Xet CAS, in memory."""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

# hf_xet reads these when its process-wide session starts: a private chunk cache (so no chunk is
# taken as already uploaded from another run) and a short internal retry window (so a permanent
# CAS failure reaches publish at once)
os.environ["HF_XET_CACHE"] = tempfile.mkdtemp(prefix="hub-server-xet-")
atexit.register(shutil.rmtree, os.environ["HF_XET_CACHE"], ignore_errors=True)
os.environ.setdefault("HF_XET_CLIENT_RETRY_MAX_DURATION", "0")

LFS_SUFFIXES = (".tar", ".parquet", ".zip", ".png", ".jpg", ".npz")
LFS_THRESHOLD = 10 * 1024 * 1024      # the Hub refuses regular files above 10 MiB
MAX_FILES_PER_COMMIT = 100


# The CAS is one content-addressed store behind every repo (and hf_xet's process-wide session
# remembers which xorbs it has sent), so xorbs outlive a single HubServer, as they do on the Hub.
CAS_XORBS: dict[str, list[bytes]] = {}


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class StoredFile:
    size: int
    blob_id: str
    lfs_sha256: str | None = None     # set for LFS files
    content: bytes | None = None      # kept for regular files

    def entry(self, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "path": path, "size": self.size, "oid": self.blob_id}
        if self.lfs_sha256:
            out["lfs"] = {"oid": self.lfs_sha256, "size": self.size, "pointerSize": 130}
        return out


@dataclass
class Repo:
    repo_id: str
    private: bool
    repo_type: str = "dataset"
    commits: dict[str, dict[str, StoredFile]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        revision = unquote(revision)
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        return next((sha for sha in self.commits if sha.startswith(revision)), None)


class HubState:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        # (method, path regex) -> statuses (or (status, headers)) to answer the next matching calls with
        self.fail_next: dict[tuple[str, str], list[int | tuple[int, dict[str, str]]]] = {}
        self.before: dict[tuple[str, str], Callable[[], None]] = {}  # hooks run once before a matching call
        self.lose_response: dict[tuple[str, str], list[int]] = {}    # the call succeeds, its answer is this status
        self.read_only_tokens: set[str] = set()
        self.hidden: set[str] = set()           # repos that exist but no test token may see (private, gated)
        self.max_files_per_commit = MAX_FILES_PER_COMMIT
        self.serves_xet = True
        self.xorbs = CAS_XORBS
        self._counter = 0

    def new_commit(self, repo: Repo, files: dict[str, StoredFile], branch: str = "main") -> str:
        self._counter += 1
        sha = hashlib.sha1(f"{repo.repo_id}:{self._counter}".encode()).hexdigest()
        repo.commits[sha] = files
        repo.branches[branch] = sha
        return sha

    def create_repo(self, repo_id: str, private: bool = False, repo_type: str = "dataset") -> Repo:
        repo = Repo(repo_id, private, repo_type)
        attributes = b"*.tar filter=lfs diff=lfs merge=lfs -text\n"
        self.new_commit(repo, {".gitattributes": StoredFile(len(attributes), git_blob_sha(attributes),
                                                             content=attributes)})
        self.repos[repo_id] = repo
        return repo

    def external_commit(self, repo_id: str, path: str, data: bytes) -> str:
        """Another writer commits to main (what a concurrent publish would do)."""
        repo = self.repos[repo_id]
        files = dict(repo.commits[repo.branches["main"]])
        files[path] = StoredFile(len(data), git_blob_sha(data), content=data)
        return self.new_commit(repo, files)

    def head_files(self, repo_id: str) -> dict[str, StoredFile]:
        repo = self.repos[repo_id]
        return repo.commits[repo.branches["main"]]

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p in self.requests if m == method and re.search(pattern, p))

    def put_file(self, repo_id: str, path: str, data: bytes) -> str:
        """Commit one file straight to main (LFS-stored when binary), as another tool would."""
        repo = self.repos[repo_id]
        files = dict(repo.commits[repo.branches["main"]])
        if path.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(data).hexdigest()
            self.lfs_objects[sha] = data
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\n".encode()
            files[path] = StoredFile(len(data), git_blob_sha(pointer), lfs_sha256=sha)
        else:
            files[path] = StoredFile(len(data), git_blob_sha(data), content=data)
        return self.new_commit(repo, files)
