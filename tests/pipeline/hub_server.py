"""A loopback stand-in for the Hugging Face Hub HTTP API, enough for publishing.

It implements the endpoints the real `huggingface_hub` client calls to create
a dataset repo, read its head and tree, pre-upload and commit files (Xet
uploads through `hub_xet`'s CAS, LFS basic transfer, regular files in NDJSON
commits, with `parentCommit` checks), list refs and create tags, so tests
exercise the client's real code path without the internet. It is strict where
the Hub is: writes need a token with write access, a repo answers only under
its own type, a commit holds at most `max_files_per_commit` files, a regular
(non-LFS) file must be small text, LFS/Xet content must match its sha256.
State lives in memory; `requests` logs every call; `fail_next` injects errors
(a status, or a (status, headers) pair such as (429, {"Retry-After": "120"}));
`lose_response` answers a call that succeeded with an error status.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml
from hub_state import LFS_SUFFIXES, LFS_THRESHOLD, HubState, Repo, StoredFile, git_blob_sha
from hub_xet import CasError, rebuild_files, xorb_chunks

HUB_LICENSES = frozenset({"apache-2.0", "mit", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0",
                          "cc0-1.0", "odc-by", "odbl", "openrail", "other", "unknown"})
XET_TOKEN = "xet-write-token-for-tests"


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


@dataclass
class Raw:
    """A response other than a JSON body with status 200."""
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


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
    ("GET", r"/(?P<type>datasets/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ("GET", REPO + r"/xet-write-token/(?P<rev>[^/]+)", "xet_write_token"),
    ("GET", r"/cas/v1/chunks/(?P<prefix>[^/]+)/(?P<hash>[0-9a-f]{64})", "cas_chunk"),
    ("POST", r"/cas/v1/xorb-grants/(?P<prefix>[^/]+)/(?P<hash>[0-9a-f]{64})", "cas_grant"),
    ("POST", r"/cas/v1/xorbs/(?P<prefix>[^/]+)/(?P<hash>[0-9a-f]{64})", "cas_xorb"),
    ("POST", r"/cas/v2/shards", "cas_shard"),
    ("POST", r"/v1/telemetry", "telemetry"),
]
WRITES = {"create_repo", "preupload", "commit", "tag", "lfs_batch", "xet_write_token"}
CAS = {"cas_chunk", "cas_grant", "cas_xorb", "cas_shard"}


class HubHandler(BaseHTTPRequestHandler):
    server: HubServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True      # headers and body go out in two writes: no 40 ms delayed-ACK stall

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
        body = self._body()
        state = self.server.state
        with state.lock:
            state.requests.append((method, url.path))
            for (hook_method, pattern), hook in list(state.before.items()):
                if hook_method == method and re.search(pattern, url.path):
                    del state.before[(hook_method, pattern)]
                    hook()
            for (fail_method, pattern), statuses in state.fail_next.items():
                if fail_method == method and re.search(pattern, url.path) and statuses:
                    status, headers = statuses.pop(0), {}
                    if isinstance(status, tuple):
                        status, headers = status
                    return self._send(status, {"error": "injected failure"}, headers=headers)
        for route_method, pattern, name in ROUTES:
            match = re.fullmatch(pattern, url.path)
            if route_method == method and match:
                try:
                    with state.lock:
                        self._authorize(name, match.groupdict())
                        result = getattr(self, "_" + name)(match.groupdict(), body, parse_qs(url.query))
                except HubError as exc:
                    return self._send(exc.status, {"error": exc.message, **exc.extra}, exc.code)
                if isinstance(result, Raw):
                    return self._send_raw(result)
                with state.lock:
                    lost = [s for (m, p), s in state.lose_response.items() if m == method and re.search(p, url.path)]
                if lost and lost[0]:
                    return self._send(lost[0].pop(0), {"error": "injected failure after the call succeeded"})
                return self._send(200, result)
        self._send(404, {"error": f"no route for {method} {url.path}"})

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b""
        while size := int(self.rfile.readline().strip() or b"0", 16):
            body += self.rfile.read(size)
            self.rfile.readline()
        self.rfile.readline()
        return body

    def _authorize(self, name: str, groups: dict[str, str]) -> None:
        """Writes need a token with write access; the CAS needs the Xet token; hidden repos 404."""
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None
        if name in CAS:
            if token != XET_TOKEN:
                raise HubError(401, "invalid or missing Xet token")
            return
        state = self.server.state
        if groups.get("repo") in state.hidden and name != "create_repo":
            raise HubError(404, f"Repository {groups['repo']} not found", "RepoNotFound")
        if name in WRITES:
            if token is None:
                raise HubError(401, "Invalid credentials in Authorization header")
            if token in state.read_only_tokens:
                raise HubError(403, "You don't have the rights to write to this repository")

    def _send(self, status: int, payload: Any, error_code: str | None = None,
              headers: dict[str, str] | None = None) -> None:
        extra = dict(headers or {})
        if error_code:
            extra["X-Error-Code"] = error_code
        if status >= 400 and isinstance(payload, dict):
            extra["X-Error-Message"] = str(payload.get("error", ""))[:200]
        extra["Content-Type"] = "application/json"
        self._send_raw(Raw(status, json.dumps(payload).encode(), extra))

    def _send_raw(self, response: Raw) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    # -- helpers -------------------------------------------------------------------------
    def _repo(self, groups: dict[str, str]) -> Repo:
        repo = self.server.state.repos.get(groups["repo"])
        kind = (groups.get("type") or "models").rstrip("/")
        if repo is None or kind != repo.repo_type + "s":     # a dataset is not found as a model
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
        self.server.state.create_repo(repo_id, private=bool(private), repo_type=payload.get("type", "model"))
        return {"url": url, "name": repo_id}

    def _validate_yaml(self, groups: dict, body: bytes, query: dict) -> Any:
        content = json.loads(body)["content"]
        match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        if not match:
            return {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]}
        try:
            metadata = yaml.safe_load(match.group(1)) or {}
        except yaml.YAMLError as exc:
            raise HubError(400, f"invalid YAML: {exc}", errors=[{"message": "invalid YAML"}]) from None
        errors = []
        if metadata.get("license") not in HUB_LICENSES:
            license_id = metadata.get("license")
            errors.append({"message": f'"license" must be one of the Hub\'s license ids; got {license_id!r}'})
        for config in metadata.get("configs", []):
            if not isinstance(config, dict) or "config_name" not in config or "data_files" not in config:
                errors.append({"message": '"configs" entries need "config_name" and "data_files"'})
        if errors:
            raise HubError(400, "Invalid metadata", errors=errors)
        return {"errors": [], "warnings": []}

    def _whoami(self, groups: dict, body: bytes, query: dict) -> Any:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            raise HubError(401, "Invalid credentials in Authorization header")
        role = "read" if auth.removeprefix("Bearer ") in self.server.state.read_only_tokens else "write"
        return {"type": "user", "name": "tester", "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": role}}}

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
            lfs = item["path"].endswith(LFS_SUFFIXES) or b"\0" in sample or item["size"] > LFS_THRESHOLD
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
        if len(lines) - 1 > self.server.state.max_files_per_commit:
            raise HubError(422, f"a commit may hold at most {self.server.state.max_files_per_commit} files; "
                                f"got {len(lines) - 1}")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent and not head.startswith(parent):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        new_files = dict(files)
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                data = base64.b64decode(value["content"])
                if len(data) > LFS_THRESHOLD or b"\0" in data[:1024]:
                    raise HubError(400, f"{value['path']}: binary or larger than 10 MiB; upload it with LFS/Xet")
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


    def _resolve(self, groups: dict, body: bytes, query: dict) -> Any:
        groups = {**groups, "type": groups.get("type") or "models"}
        _, files = self._files(self._repo(groups), groups["rev"])
        stored = files.get(unquote(groups["path"]))
        if stored is None:
            raise HubError(404, "Entry not found", "EntryNotFound")
        data = stored.content if stored.content is not None else self.server.state.lfs_objects[stored.lfs_sha256]
        return Raw(200, data, {"Content-Type": "application/octet-stream"})

    # -- Xet (hub_xet holds the formats) ----------------------------------------------------
    def _xet_write_token(self, groups: dict, body: bytes, query: dict) -> Any:
        if not self.server.state.serves_xet:
            raise HubError(404, "no route for Xet tokens")
        self._files(self._repo(groups), groups["rev"])
        headers = {"X-Xet-Cas-Url": f"{self.server.url}/cas", "X-Xet-Access-Token": XET_TOKEN,
                   "X-Xet-Token-Expiration": str(int(time.time()) + 3600)}
        payload = {"casUrl": headers["X-Xet-Cas-Url"], "accessToken": XET_TOKEN,
                   "exp": int(headers["X-Xet-Token-Expiration"])}
        return Raw(200, json.dumps(payload).encode(), {**headers, "Content-Type": "application/json"})

    def _cas_chunk(self, groups: dict, body: bytes, query: dict) -> Any:
        raise HubError(404, "no global dedup on this CAS")

    def _cas_grant(self, groups: dict, body: bytes, query: dict) -> Any:
        raise HubError(404, "upload grants are off: send the xorb to /v1/xorbs")

    def _cas_xorb(self, groups: dict, body: bytes, query: dict) -> Any:
        try:
            self.server.state.xorbs[groups["hash"]] = xorb_chunks(body)
        except CasError as exc:
            raise HubError(400, f"xorb {groups['hash'][:12]}: {exc}") from None
        return {"was_inserted": True}

    def _cas_shard(self, groups: dict, body: bytes, query: dict) -> Any:
        try:
            files = rebuild_files(body, self.server.state.xorbs)
        except CasError as exc:
            return Raw(200, json.dumps({"type": "error", "message": str(exc)}).encode() + b"\n")
        self.server.state.lfs_objects.update(files)
        frames = [{"type": "validating", "verified": len(files), "total": len(files)},
                  {"type": "result", "result": 1}]
        return Raw(200, b"".join(json.dumps(frame).encode() + b"\n" for frame in frames),
                   {"Content-Type": "application/x-ndjson"})

    def _telemetry(self, groups: dict, body: bytes, query: dict) -> Any:
        return {}


class HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.state = HubState()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
        self.server_close()
