"""A small Hugging Face Hub protocol server for tests (loopback only, never for real use).

It implements what ``huggingface_hub`` 0.36 (and ``datasets`` / ``sentence-transformers`` through it)
call to create repositories and push to them, with a real commit history per repository:

- ``POST /api/repos/create``; ``GET /api/whoami-v2``; ``POST /api/validate-yaml``
- ``GET /api/{models,datasets}/{id}[/revision/{rev}]`` (repo_info), ``.../tree/{rev}[/{path}]``,
  ``POST .../paths-info/{rev}``, ``GET .../commits/{rev}``, ``GET .../refs``
- ``POST .../preupload/{rev}``: upload mode per file (LFS for binary, large or usual weight/data
  extensions) and the oid of the file already there, so the client can skip unchanged files
- ``POST /{prefix}{id}.git/info/lfs/objects/batch`` with the classic ``basic`` transfer: the client PUTs
  the bytes to the returned ``upload`` href and POSTs the ``verify`` href
- ``POST .../commit/{rev}``: the ndjson payload (header, file, lfsFile, deletedFile, deletedFolder),
  ``parentCommit`` checked (412 when stale)
- ``GET|HEAD /{prefix}{id}/resolve/{rev}/{path}``: file contents

Inference Providers: ``server.provider_mappings[model_id] = {provider: {"providerId": ..., "status": "live",
"task": "conversational"}}`` answers ``GET /api/models/{id}?expand=inferenceProviderMapping``.

Inference Endpoints (huggingface_hub's ``*_inference_endpoint`` calls, at ``{server.url}/v2``: point
``DOMAIN_EMBED_HF_ENDPOINTS_API`` there): ``GET|POST /v2/endpoint/{ns}``, ``GET|DELETE /v2/endpoint/{ns}/{name}``,
``POST .../pause``, ``.../resume``, ``.../scale-to-zero``. A created or resumed endpoint goes pending ->
initializing -> running, one step per GET; running, its URL is ``server.endpoint_url`` (a real LLM server).
``server.endpoints[(ns, name)]`` holds each one's state, ``server.endpoint_events`` every action in order;
``fail_next["endpoint_create"] = 1`` answers the next create with 402 (no payment method);
``server.endpoint_fails_to_start = True`` makes the next start end in state ``failed``.

Faults for tests: ``server.fail_next["commit"] = 1`` answers the next commit with a 500 (likewise
``"lfs_upload"``, ``"preupload"``, ``"lfs_batch"``). Every request is recorded in ``server.requests``.

Example::

    >>> server = HubServer.start(token="hf_test_token_123456")
    >>> server.url.startswith("http://127.0.0.1:")
    True
    >>> server.stop()
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_EXTENSIONS = ("*.safetensors", "*.bin", "*.onnx", "*.onnx_data", "*.parquet", "*.arrow", "*.pt", "*.pth",
                  "*.h5", "*.msgpack", "*.model", "*.npy", "*.zip", "*.gz", "*.png")
LFS_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_EXTENSIONS).encode()


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class Entry:
    size: int
    oid: str  # git blob oid (of the pointer for LFS files)
    sha256: str | None = None  # set for LFS files


@dataclass
class Commit:
    oid: str
    title: str
    message: str
    date: str
    files: dict[str, Entry]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)  # oldest first

    @property
    def head(self) -> Commit:
        return self.commits[-1]


class HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


_REPO_RE = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/(.*))?$")


class HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, token: str | None, user: str = "tester"):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.token = token
        self.user = user
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.RLock()
        self.fail_next: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []
        self.auth_headers: set[str] = set()  # every Authorization header seen
        self.provider_mappings: dict[str, dict[str, dict[str, str]]] = {}
        self.endpoints: dict[tuple[str, str], dict[str, Any]] = {}
        self.endpoint_events: list[tuple[str, str]] = []  # (action, name)
        self.endpoint_url: str | None = None
        self.endpoint_fails_to_start = False
        self.thread: threading.Thread | None = None
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "lfs").mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def start(cls, token: str | None = None, root: Path | None = None) -> HubServer:
        root = Path(root) if root else Path(tempfile.mkdtemp(prefix="hub-server-"))
        server = cls(root, token)
        server.thread = threading.Thread(target=server.serve_forever, name="hub-server", daemon=True)
        server.thread.start()
        return server

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    # ------------------------------------------------------------------ test helpers

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def file_bytes(self, repo_id: str, path: str, repo_type: str = "model") -> bytes:
        entry = self.repo(repo_id, repo_type).head.files[path]
        return self._read(entry)

    def should_fail(self, what: str, repo_id: str | None = None) -> bool:
        """Consume one injected fault for ``what`` (or ``what:repo_id``), if any is left."""
        with self.lock:
            for key in ([f"{what}:{repo_id}"] if repo_id else []) + [what]:
                n = self.fail_next.get(key, 0)
                if n > 0:
                    self.fail_next[key] = n - 1
                    return True
            return False

    def add_endpoint(self, ns: str, name: str, repository: str, state: str = "paused") -> None:
        """An endpoint the user already had (test setup)."""
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        self.endpoints[(ns, name)] = {
            "name": name, "state": state, "url": self.endpoint_url if state == "running" else None,
            "created": now, "repository": repository, "framework": "pytorch", "image": {"huggingface": {}},
            "compute": {"accelerator": "gpu", "instanceSize": "x1", "instanceType": "nvidia-l4"},
            "provider": {"vendor": "aws", "region": "us-east-1"}}

    # ------------------------------------------------------------------ storage

    def _store_blob(self, data: bytes) -> str:
        oid = git_blob_oid(data)
        path = self.root / "blobs" / oid
        if not path.exists():
            path.write_bytes(data)
        return oid

    def _read(self, entry: Entry) -> bytes:
        if entry.sha256:
            return (self.root / "lfs" / entry.sha256).read_bytes()
        return (self.root / "blobs" / entry.oid).read_bytes()

    def _new_commit(self, repo: Repo, files: dict[str, Entry], title: str, message: str) -> Commit:
        parent = repo.commits[-1].oid if repo.commits else ""
        tree = json.dumps({p: [e.oid, e.sha256] for p, e in sorted(files.items())})
        oid = hashlib.sha1(f"{parent}\0{title}\0{message}\0{tree}\0{time.time_ns()}".encode()).hexdigest()
        commit = Commit(oid, title, message, time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), files)
        repo.commits.append(commit)
        return commit

    def sign(self, oid: str) -> str:
        return hashlib.sha256(f"{id(self)}:{oid}".encode()).hexdigest()[:16]

    def is_lfs(self, path: str, size: int, sample: bytes) -> bool:
        name = path.rsplit("/", 1)[-1]
        return size >= LFS_THRESHOLD or b"\0" in sample or any(fnmatch.fnmatch(name, p) for p in LFS_EXTENSIONS)


class _Handler(BaseHTTPRequestHandler):
    server: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # ------------------------------------------------------------------ plumbing

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            return self.rfile.read(n)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return b""

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None,
              raw: bytes | None = None, head: bool = False) -> None:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.server.token is None:
            return True
        return self.headers.get("Authorization", "") == f"Bearer {self.server.token}"

    def _require_auth(self) -> None:
        if not self._authorized():
            raise HttpError(401, "Invalid credentials in Authorization header")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.server.requests.append((method, url.path))
        if self.headers.get("Authorization"):
            self.server.auth_headers.add(self.headers["Authorization"])
        body = self._body() if method in ("POST", "PUT") else b""
        try:
            self._route(method, url.path, parse_qs(url.query), body)
        except HttpError as err:
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send(err.status, {"error": err.message}, headers, head=method == "HEAD")  # HEAD: no body

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ------------------------------------------------------------------ routing

    def _get_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.server.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self._authorized()):
            raise HttpError(404, "Repository not found", "RepoNotFound")
        return repo

    def _commit_at(self, repo: Repo, rev: str) -> Commit:
        rev = unquote(rev)
        if rev in ("main", "refs/heads/main"):
            return repo.head
        for c in repo.commits:
            if c.oid == rev or (len(rev) >= 7 and c.oid.startswith(rev)):
                return c
        raise HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> None:
        s = self.server
        if path == "/api/whoami-v2" and method == "GET":
            self._require_auth()
            return self._send(200, {"type": "user", "name": s.user, "fullname": s.user, "orgs": [],
                                    "auth": {"type": "access_token", "accessToken": {"role": "write"}}})
        if path == "/api/models" and method == "GET":
            return self._send(200, [])
        if path == "/api/validate-yaml" and method == "POST":
            return self._validate_yaml(json.loads(body or b"{}"))
        if path == "/api/repos/create" and method == "POST":
            return self._create(json.loads(body or b"{}"))
        if path.startswith("/lfs-upload/") and method == "PUT":
            return self._lfs_put(path, body)
        if path.startswith("/lfs-verify/") and method == "POST":
            info = json.loads(body or b"{}")
            if not (s.root / "lfs" / info.get("oid", "-")).is_file():
                raise HttpError(404, "object not found")
            return self._send(200, {})
        m = re.match(r"^/(datasets/|spaces/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch$", path)
        if m and method == "POST":
            return self._lfs_batch((m.group(1) or "models/").rstrip("/"), m.group(2), json.loads(body or b"{}"))
        m = re.match(r"^/(datasets/|spaces/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m and method in ("GET", "HEAD"):
            return self._resolve((m.group(1) or "models/").rstrip("/"), m.group(2), m.group(3), unquote(m.group(4)),
                                 head=method == "HEAD")
        if path.startswith("/v2/endpoint/"):
            self._require_auth()
            return self._endpoint_route(method, path[len("/v2/endpoint/"):].strip("/").split("/"), body)
        m = re.match(r"^/api/models/([^/]+/[^/]+)$", path)
        if m and method == "GET" and m.group(1) in s.provider_mappings:
            return self._send(200, {"_id": "x", "id": m.group(1), "inferenceProviderMapping":
                                    s.provider_mappings[m.group(1)]})
        m = _REPO_RE.match(path)
        if not m:
            raise HttpError(404, f"no route for {method} {path}")
        kind, repo_id, rest = m.group(1), m.group(2), m.group(3) or ""
        repo_type = kind[:-1]
        with s.lock:
            repo = self._get_repo(repo_type, repo_id)
            if method == "GET" and (rest == "" or rest.startswith("revision/")):
                commit = self._commit_at(repo, rest.split("/", 1)[1]) if rest else repo.head
                return self._send(200, self._info(repo, commit))
            if method == "GET" and rest.startswith("tree/"):
                rev, _, sub = rest[5:].partition("/")
                recursive = query.get("recursive", ["False"])[0].lower() == "true"
                return self._send(200, self._tree(self._commit_at(repo, rev), unquote(sub), recursive))
            if method == "POST" and rest.startswith("paths-info/"):
                commit = self._commit_at(repo, rest[len("paths-info/"):])
                return self._send(200, self._paths_info(commit, body))
            if method == "GET" and rest.startswith("commits/"):
                self._commit_at(repo, rest[len("commits/"):])
                return self._send(200, [{"id": c.oid, "title": c.title, "message": c.message, "date": c.date,
                                         "authors": [{"user": s.user}]} for c in reversed(repo.commits)])
            if method == "GET" and rest == "refs":
                return self._send(200, {"branches": [{"name": "main", "ref": "refs/heads/main",
                                                      "targetCommit": repo.head.oid}], "converts": [], "tags": []})
            if method == "POST" and rest.startswith("preupload/"):
                self._require_auth()
                return self._preupload(repo, self._commit_at(repo, rest[len("preupload/"):]), json.loads(body))
            if method == "POST" and rest.startswith("commit/"):
                self._require_auth()
                return self._commit(repo, rest[len("commit/"):], body)
        raise HttpError(404, f"no route for {method} {path}")

    # ------------------------------------------------------------------ Inference Endpoints

    def _endpoint_json(self, ep: dict[str, Any]) -> dict[str, Any]:
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        return {"name": ep["name"], "type": "protected", "accountId": None, "healthRoute": "/v1/models",
                "compute": ep["compute"], "provider": ep["provider"],
                "model": {"repository": ep["repository"], "framework": ep["framework"], "revision": None,
                          "task": "text-generation", "image": ep["image"]},
                "status": {"state": ep["state"], "url": ep["url"], "createdAt": ep["created"], "updatedAt": now,
                           "message": ep.get("message", "")}}

    def _advance(self, ep: dict[str, Any]) -> None:
        """One step of a start, as the real service does over minutes."""
        s = self.server
        steps = {"pending": "initializing", "initializing": "running"}
        if ep["state"] in steps:
            ep["state"] = steps[ep["state"]]
            if ep["state"] == "running":
                if s.endpoint_fails_to_start:
                    s.endpoint_fails_to_start = False
                    ep["state"], ep["message"] = "failed", "the model did not load"
                else:
                    ep["url"] = s.endpoint_url

    def _endpoint_route(self, method: str, parts: list[str], body: bytes) -> None:
        s = self.server
        ns = parts[0]
        with s.lock:
            if len(parts) == 1 and method == "GET":
                return self._send(200, {"items": [self._endpoint_json(e) for (n, _), e in s.endpoints.items()
                                                  if n == ns]})
            if len(parts) == 1 and method == "POST":
                payload = json.loads(body or b"{}")
                name = payload["name"]
                if s.should_fail("endpoint_create"):
                    raise HttpError(402, "Payment Required: add a payment method to create an endpoint")
                if (ns, name) in s.endpoints:
                    raise HttpError(409, f"Endpoint {name} already exists")
                now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
                s.endpoints[(ns, name)] = ep = {
                    "name": name, "state": "pending", "url": None, "created": now,
                    "repository": payload["model"]["repository"], "framework": payload["model"]["framework"],
                    "image": payload["model"]["image"], "compute": payload["compute"], "provider": payload["provider"]}
                s.endpoint_events.append(("create", name))
                return self._send(200, self._endpoint_json(ep))
            ep = s.endpoints.get((ns, parts[1])) if len(parts) >= 2 else None
            if ep is None:
                raise HttpError(404, f"Endpoint {'/'.join(parts[:2])} not found")
            action = parts[2] if len(parts) == 3 else None
            if method == "GET" and action is None:
                self._advance(ep)
                return self._send(200, self._endpoint_json(ep))
            if method == "DELETE" and action is None:
                s.endpoint_events.append(("delete", ep["name"]))
                del s.endpoints[(ns, ep["name"])]
                return self._send(200, {})
            if method == "POST" and action == "pause":
                ep["state"], ep["url"] = "paused", None
            elif method == "POST" and action == "scale-to-zero":
                ep["state"] = "scaledToZero"
            elif method == "POST" and action == "resume":
                if ep["state"] == "running":
                    raise HttpError(400, "Endpoint is already running")
                ep["state"], ep["url"] = "initializing", None
            else:
                raise HttpError(404, f"no route for {method} /v2/endpoint/{'/'.join(parts)}")
            s.endpoint_events.append((action, ep["name"]))
            return self._send(200, self._endpoint_json(ep))

    # ------------------------------------------------------------------ endpoints

    def _validate_yaml(self, payload: dict[str, Any]) -> None:
        import yaml
        from huggingface_hub.repocard_data import model_index_to_eval_results

        content = payload.get("content", "")
        warnings = []
        if content.startswith("---"):
            try:
                meta = yaml.safe_load(content.split("---", 2)[1]) or {}
                if "model-index" in meta:  # the Hub rejects a model-index it cannot read
                    model_index_to_eval_results(meta["model-index"])
            except Exception as exc:  # noqa: BLE001 - any parse failure is the client's error
                raise HttpError(400, f"Invalid metadata in README.md: {exc}") from None
        else:
            warnings.append({"message": "empty or missing yaml metadata in repo card"})
        self._send(200, {"errors": [], "warnings": warnings})

    def _create(self, payload: dict[str, Any]) -> None:
        self._require_auth()
        s = self.server
        repo_type = payload.get("type") or "model"
        owner = payload.get("organization") or s.user
        repo_id = f"{owner}/{payload['name']}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{s.url}/{prefix}{repo_id}"
        with s.lock:
            if (repo_type, repo_id) in s.repos:
                return self._send(409, {"error": "You already created this repo", "url": url},
                                  {"X-Error-Message": "You already created this repo"})
            repo = Repo(repo_type, repo_id, bool(payload.get("private")))
            oid = s._store_blob(GITATTRIBUTES)
            s._new_commit(repo, {".gitattributes": Entry(len(GITATTRIBUTES), oid)}, "initial commit", "")
            s.repos[(repo_type, repo_id)] = repo
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def _info(self, repo: Repo, commit: Commit) -> dict[str, Any]:
        siblings = [{"rfilename": p, "size": e.size, "blobId": e.oid,
                     **({"lfs": {"sha256": e.sha256, "size": e.size, "pointerSize": 130}} if e.sha256 else {})}
                    for p, e in sorted(commit.files.items())]
        return {"_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
                "author": repo.repo_id.split("/")[0], "sha": commit.oid, "private": repo.private, "disabled": False,
                "gated": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
                "lastModified": commit.date, "createdAt": repo.commits[0].date}

    @staticmethod
    def _file_json(path: str, e: Entry) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "path": path, "size": e.size, "oid": e.oid}
        if e.sha256:
            out["lfs"] = {"oid": e.sha256, "size": e.size, "pointerSize": len(lfs_pointer(e.sha256, e.size))}
        return out

    def _tree(self, commit: Commit, sub: str, recursive: bool) -> list[dict[str, Any]]:
        prefix = sub.strip("/") + "/" if sub.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in commit.files):
            raise HttpError(404, f"{sub} does not exist", "EntryNotFound")
        out, dirs = [], set()
        for path, e in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            parts = rest.split("/")
            for i in range(1, len(parts)):
                d = prefix + "/".join(parts[:i])
                if (recursive or i == 1) and d not in dirs:
                    dirs.add(d)
                    out.append({"type": "directory", "path": d, "size": 0,
                                "oid": hashlib.sha1(d.encode()).hexdigest()})
            if recursive or len(parts) == 1:
                out.append(self._file_json(path, e))
        return out

    def _paths_info(self, commit: Commit, body: bytes) -> list[dict[str, Any]]:
        if "json" in self.headers.get("Content-Type", ""):
            paths = json.loads(body).get("paths", [])
        else:  # a form, as HfApi.get_paths_info sends it
            paths = parse_qs(body.decode()).get("paths", [])
        out = []
        for p in paths:
            p = p.strip("/")
            if p in commit.files:
                out.append(self._file_json(p, commit.files[p]))
            elif any(f.startswith(p + "/") for f in commit.files):
                out.append({"type": "directory", "path": p, "size": 0, "oid": hashlib.sha1(p.encode()).hexdigest()})
        return out

    def _preupload(self, repo: Repo, commit: Commit, payload: dict[str, Any]) -> None:
        if self.server.should_fail("preupload"):
            raise HttpError(500, "Internal Error (injected preupload fault)")
        files = []
        for f in payload.get("files", []):
            sample = base64.b64decode(f.get("sample", ""))
            lfs = self.server.is_lfs(f["path"], int(f["size"]), sample)
            existing = commit.files.get(f["path"])
            oid = None
            if existing is not None:
                oid = existing.sha256 if existing.sha256 else existing.oid
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        self._send(200, {"files": files, "commitOid": commit.oid})

    def _lfs_batch(self, kind: str, repo_id: str, payload: dict[str, Any]) -> None:
        s = self.server
        self._require_auth()
        with s.lock:
            repo = self._get_repo(kind[:-1], repo_id)
        if s.should_fail("lfs_batch"):
            raise HttpError(500, "Internal Error (injected LFS batch fault)")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if not (s.root / "lfs" / oid).is_file():
                entry["actions"] = {
                    # a "presigned" URL, like S3's: the PUT carries no Authorization header
                    "upload": {"href": f"{s.url}/lfs-upload/{s.sign(oid)}/{oid}"},
                    "verify": {"href": f"{s.url}/lfs-verify/{repo.repo_type}/{repo_id}/{oid}"},
                }
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects})

    def _lfs_put(self, path: str, body: bytes) -> None:
        sig, oid = path.split("/")[-2:]
        if sig != self.server.sign(oid):
            raise HttpError(403, "bad upload signature")
        if self.server.should_fail("lfs_upload"):
            raise HttpError(500, "Internal Error (injected LFS upload fault)")
        if hashlib.sha256(body).hexdigest() != oid:
            raise HttpError(400, "sha256 of the uploaded bytes does not match the oid")
        (self.server.root / "lfs" / oid).write_bytes(body)
        self._send(200, {})

    def _commit(self, repo: Repo, rev: str, body: bytes) -> None:
        s = self.server
        if s.should_fail("commit", repo.repo_id):
            raise HttpError(500, "Internal Error (injected commit fault)")
        if unquote(rev) not in ("main", "refs/heads/main"):
            raise HttpError(400, "this test server only has the main branch")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HttpError(400, "commit payload must start with a header")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent and not repo.head.oid.startswith(parent):
            raise HttpError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(repo.head.files)
        for item in lines[1:]:
            key, value = item["key"], item["value"]
            path = value["path"].strip("/")
            if key == "file":
                data = base64.b64decode(value["content"])
                files[path] = Entry(len(data), s._store_blob(data))
            elif key == "lfsFile":
                sha = value["oid"]
                if not (s.root / "lfs" / sha).is_file():
                    raise HttpError(422, f"LFS object {sha} for {path} was never uploaded")
                files[path] = Entry(int(value["size"]), git_blob_oid(lfs_pointer(sha, int(value["size"]))), sha)
            elif key == "deletedFile":
                if path not in files:
                    raise HttpError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                for p in [p for p in files if p.startswith(path + "/")]:
                    del files[p]
            else:
                raise HttpError(400, f"unknown commit operation {key!r}")
        commit = s._new_commit(repo, files, header.get("summary", ""), header.get("description", ""))
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        self._send(200, {"success": True, "commitOid": commit.oid, "pullRequestUrl": None,
                         "commitUrl": f"{s.url}/{prefix}{repo.repo_id}/commit/{commit.oid}"})

    def _resolve(self, kind: str, repo_id: str, rev: str, path: str, head: bool) -> None:
        s = self.server
        with s.lock:
            repo = self._get_repo(kind[:-1], repo_id)
            commit = self._commit_at(repo, rev)
            entry = commit.files.get(path)
            if entry is None:
                raise HttpError(404, f"Entry not found: {path}", "EntryNotFound")
            data = s._read(entry)
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{entry.sha256 or entry.oid}"'}
        if entry.sha256:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        self._send(200, raw=data, headers=headers, head=head)


def cleanup(server: HubServer) -> None:
    """Stop the server and delete its storage."""
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)
