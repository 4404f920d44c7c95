"""A loopback stand-in for the Hugging Face Hub HTTP API, enough for publishing.

It implements the endpoints the real `huggingface_hub` client calls to create
a dataset repo, read its head and tree, pre-upload and commit files (LFS basic
transfer and regular files in NDJSON commits, with `parentCommit` checks),
list refs and create tags, so tests exercise the client's real code path
without the internet. State lives in memory; `requests` logs every call.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".tar", ".parquet", ".zip", ".png", ".jpg", ".npz")


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
        self.fail_next: dict[tuple[str, str], list[int]] = {}     # (method, path regex) -> statuses to return
        self.before: dict[tuple[str, str], Callable[[], None]] = {}  # hooks run once before a matching call
        self._counter = 0

    def new_commit(self, repo: Repo, files: dict[str, StoredFile], branch: str = "main") -> str:
        self._counter += 1
        sha = hashlib.sha1(f"{repo.repo_id}:{self._counter}".encode()).hexdigest()
        repo.commits[sha] = files
        repo.branches[branch] = sha
        return sha

    def create_repo(self, repo_id: str, private: bool = False) -> Repo:
        repo = Repo(repo_id, private)
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


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


REPO = r"/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
ROUTES: list[tuple[str, str, str]] = [
    ("POST", r"/api/repos/create", "create_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("GET", r"/api/whoami-v2", "whoami"),
    ("GET", REPO + r"/revision/(?P<rev>[^/]+)", "repo_info"),
    ("GET", REPO, "repo_info"),
    ("GET", REPO + r"/tree/(?P<rev>[^/]+)(?P<path>/.*)?", "tree"),
    ("POST", REPO + r"/paths-info/(?P<rev>[^/]+)", "paths_info"),
    ("POST", REPO + r"/preupload/(?P<rev>[^/]+)", "preupload"),
    ("POST", REPO + r"/commit/(?P<rev>[^/]+)", "commit"),
    ("GET", REPO + r"/refs", "refs"),
    ("POST", REPO + r"/tag/(?P<rev>[^/]+)", "tag"),
    ("POST", r"/(?P<type>datasets/)?(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", "lfs_batch"),
    ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_put"),
]


class HubHandler(BaseHTTPRequestHandler):
    server: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        state = self.server.state
        with state.lock:
            state.requests.append((method, url.path))
            for (hook_method, pattern), hook in list(state.before.items()):
                if hook_method == method and re.search(pattern, url.path):
                    del state.before[(hook_method, pattern)]
                    hook()
            for (fail_method, pattern), statuses in state.fail_next.items():
                if fail_method == method and re.search(pattern, url.path) and statuses:
                    return self._send(statuses.pop(0), {"error": "injected failure"})
        for route_method, pattern, name in ROUTES:
            match = re.fullmatch(pattern, url.path)
            if route_method == method and match:
                try:
                    with state.lock:
                        result = getattr(self, "_" + name)(match.groupdict(), body, parse_qs(url.query))
                except HubError as exc:
                    return self._send(exc.status, {"error": exc.message, **exc.extra}, exc.code)
                return self._send(200, result)
        self._send(404, {"error": f"no route for {method} {url.path}"})

    def _send(self, status: int, payload: Any, error_code: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if error_code:
            self.send_header("X-Error-Code", error_code)
        if status >= 400 and isinstance(payload, dict):
            self.send_header("X-Error-Message", str(payload.get("error", ""))[:200])
        self.end_headers()
        self.wfile.write(data)

    # -- helpers -------------------------------------------------------------------------
    def _repo(self, groups: dict[str, str]) -> Repo:
        repo = self.server.state.repos.get(groups["repo"])
        if repo is None:
            raise HubError(404, f"Repository {groups['repo']} not found", "RepoNotFound")
        return repo

    def _files(self, repo: Repo, revision: str) -> tuple[str, dict[str, StoredFile]]:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha, repo.commits[sha]

    # -- endpoints -----------------------------------------------------------------------
    def _create_repo(self, groups: dict, body: bytes, query: dict) -> Any:
        payload = json.loads(body)
        repo_id = f"{payload['organization']}/{payload['name']}"
        url = f"{self.server.url}/datasets/{repo_id}"
        if repo_id in self.server.state.repos:
            raise HubError(409, "You already created this dataset repo", url=url)
        private = payload.get("private", payload.get("visibility") == "private")
        self.server.state.create_repo(repo_id, private=bool(private))
        return {"url": url, "name": repo_id}

    def _validate_yaml(self, groups: dict, body: bytes, query: dict) -> Any:
        content = json.loads(body)["content"]
        match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        if not match:
            return {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]}
        try:
            yaml.safe_load(match.group(1))
        except yaml.YAMLError as exc:
            raise HubError(400, f"invalid YAML: {exc}") from None
        return {"errors": [], "warnings": []}

    def _whoami(self, groups: dict, body: bytes, query: dict) -> Any:
        return {"type": "user", "name": "tester", "orgs": []}

    def _repo_info(self, groups: dict, body: bytes, query: dict) -> Any:
        repo = self._repo(groups)
        sha, files = self._files(repo, groups.get("rev") or "main")
        siblings = [{"rfilename": path} for path in sorted(files)]
        return {"id": repo.repo_id, "sha": sha, "private": repo.private, "siblings": siblings}

    def _tree(self, groups: dict, body: bytes, query: dict) -> Any:
        _, files = self._files(self._repo(groups), groups["rev"])
        prefix = (unquote(groups.get("path") or "/")[1:]).rstrip("/")
        recursive = query.get("recursive", ["False"])[0].lower() == "true"
        entries, folders = [], set()
        for path in sorted(files):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1:] if prefix else path
            if recursive or "/" not in rest:
                entries.append(files[path].entry(path))
            else:
                folders.add(f"{prefix}/{rest.split('/')[0]}" if prefix else rest.split("/")[0])
        if recursive:
            for path in files:
                parts = path.split("/")[:-1]
                folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
            folders = {f for f in folders if not prefix or f.startswith(prefix + "/")}
        folder_entries = [{"type": "directory", "path": f, "oid": "0" * 40, "size": 0}
                          for f in sorted(folders)]
        return folder_entries + entries

    def _paths_info(self, groups: dict, body: bytes, query: dict) -> Any:
        _, files = self._files(self._repo(groups), groups["rev"])
        paths = parse_qs(body.decode()).get("paths", [])
        return [files[p].entry(p) for p in paths if p in files]

    def _preupload(self, groups: dict, body: bytes, query: dict) -> Any:
        _, files = self._files(self._repo(groups), groups["rev"])
        out = []
        for item in json.loads(body)["files"]:
            sample = base64.b64decode(item["sample"])
            lfs = item["path"].endswith(LFS_SUFFIXES) or b"\0" in sample or item["size"] > 10_000_000
            remote = files.get(item["path"])
            oid = (remote.lfs_sha256 or remote.blob_id) if remote else None
            out.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False, "oid": oid})
        return {"files": out, "commitOid": None}

    def _lfs_batch(self, groups: dict, body: bytes, query: dict) -> Any:
        self._repo(groups)
        objects = []
        for obj in json.loads(body)["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.server.state.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{self.server.url}/lfs-upload/{obj['oid']}"}}
            objects.append(entry)
        return {"transfer": "basic", "objects": objects}

    def _lfs_put(self, groups: dict, body: bytes, query: dict) -> Any:
        if hashlib.sha256(body).hexdigest() != groups["oid"]:
            raise HubError(400, "uploaded content does not match its oid")
        self.server.state.lfs_objects[groups["oid"]] = body
        return {}

    def _commit(self, groups: dict, body: bytes, query: dict) -> Any:
        repo = self._repo(groups)
        branch = unquote(groups["rev"])
        head, files = self._files(repo, branch)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent and not head.startswith(parent):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        new_files = dict(files)
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                data = base64.b64decode(value["content"])
                new_files[value["path"]] = StoredFile(len(data), git_blob_sha(data), content=data)
            elif line["key"] == "lfsFile":
                data = self.server.state.lfs_objects.get(value["oid"])
                if data is None:
                    raise HubError(400, f"LFS object {value['oid']} was never uploaded")
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{value['oid']}\n"
                new_files[value["path"]] = StoredFile(len(data), git_blob_sha(pointer.encode()),
                                                      lfs_sha256=value["oid"])
            elif line["key"] == "deletedFile":
                if new_files.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
        sha = self.server.state.new_commit(repo, new_files, branch)
        return {"commitUrl": f"{self.server.url}/datasets/{repo.repo_id}/commit/{sha}",
                "commitOid": sha, "pullRequestUrl": None}

    def _refs(self, groups: dict, body: bytes, query: dict) -> Any:
        repo = self._repo(groups)
        ref = lambda kind, name, sha: {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}
        return {"branches": [ref("heads", n, s) for n, s in repo.branches.items()],
                "tags": [ref("tags", n, s) for n, s in repo.tags.items()],
                "converts": [], "pullRequests": []}

    def _tag(self, groups: dict, body: bytes, query: dict) -> Any:
        repo = self._repo(groups)
        sha, _ = self._files(repo, groups["rev"])
        tag = json.loads(body)["tag"]
        if tag in repo.tags:
            raise HubError(409, f"Tag {tag} already exists")
        repo.tags[tag] = sha
        return {}


class HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.state = HubState()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
        self.server_close()
