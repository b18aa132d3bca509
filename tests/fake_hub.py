"""A Hugging Face Hub on 127.0.0.1 for tests: just the endpoints that ``huggingface_hub``'s upload API
(``create_repo``, ``create_branch``, ``create_commit`` with inline "regular" files) and ``snapshot_download``
call, with model repositories, branches and commits kept in memory. Requests it does not know are answered
404 and recorded in ``unknown``, so a test can say what the client asked for."""
from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml


class Repo:
    def __init__(self) -> None:
        self.commits: dict[str, dict[str, bytes]] = {}
        self.refs: dict[str, str] = {}
        self.commit("main", {}, parent=None)

    def commit(self, branch: str, files: dict[str, bytes], *, parent: str | None) -> str:
        tree = dict(self.commits[parent]) if parent else {}
        tree.update(files)
        sha = hashlib.sha1(json.dumps([parent, sorted((k, hashlib.sha256(v).hexdigest())
                                                     for k, v in tree.items())]).encode()).hexdigest()
        self.commits[sha] = tree
        self.refs[branch] = sha
        return sha

    def find(self, revision: str) -> str | None:
        return self.refs.get(revision) or (revision if revision in self.commits else None)


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[str] = []
        self.unknown: list[str] = []
        self.cards: list[str] = []  # model cards whose metadata was validated
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                hub.handle(self, "GET")

            def do_HEAD(self) -> None:
                hub.handle(self, "HEAD")

            def do_POST(self) -> None:
                hub.handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- the endpoints ----------------------------------------------------------------------------------------
    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        path = unquote(urlsplit(request.path).path)
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        with self.lock:
            self.requests.append(f"{method} {path}")
            parts = path.strip("/").split("/")
            try:
                if method == "POST" and path == "/api/repos/create":
                    return self.create_repo(request, json.loads(body))
                if method == "POST" and path == "/api/validate-yaml":
                    return self.validate_card(request, json.loads(body)["content"])
                if parts[:2] == ["api", "models"] and len(parts) >= 4:
                    repo_id, rest = "/".join(parts[2:4]), parts[4:]
                    repo = self.repos.get(repo_id)
                    if repo is None:
                        return self.send(request, 404, {"error": "Repository not found"}, code="RepoNotFound")
                    if method == "GET" and (not rest or rest[0] == "revision"):
                        return self.info(request, repo_id, repo, "/".join(rest[1:]) or "main")
                    if method == "GET" and rest[:1] == ["tree"]:
                        return self.tree(request, repo, rest[1])
                    if method == "POST" and rest[:1] == ["branch"]:
                        return self.create_branch(request, repo, "/".join(rest[1:]))
                    if method == "POST" and rest[:1] == ["preupload"]:
                        files = json.loads(body)["files"]
                        return self.send(request, 200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                                    "shouldIgnore": False} for f in files]})
                    if method == "POST" and rest[:1] == ["commit"]:
                        return self.commit(request, repo_id, repo, "/".join(rest[1:]), body)
                if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
                    return self.resolve(request, method, self.repos.get("/".join(parts[:2])), parts[3],
                                        "/".join(parts[4:]))
            except Exception as e:  # a bug here shows in the test as a server error, with its message
                return self.send(request, 500, {"error": f"{type(e).__name__}: {e}"})
            self.unknown.append(f"{method} {path}")
            self.send(request, 404, {"error": f"the fake Hub does not serve {method} {path}"})

    def create_repo(self, request, payload: dict) -> None:
        repo_id = f"{payload.get('organization')}/{payload['name']}"
        if repo_id in self.repos:
            return self.send(request, 409, {"error": "You already created this model repo", "url": self.link(repo_id)})
        self.repos[repo_id] = Repo()
        self.send(request, 200, {"url": self.link(repo_id), "name": repo_id})

    def validate_card(self, request, content: str) -> None:
        """The model card's metadata: YAML front matter between ``---`` lines that parses to a mapping."""
        head, sep, rest = content.partition("---\n")
        metadata, end, _ = rest.partition("\n---")
        try:
            ok = sep and not head.strip() and end and isinstance(yaml.safe_load(metadata), dict)
        except yaml.YAMLError:
            ok = False
        if not ok:
            return self.send(request, 400, {"errors": [{"message": "README.md metadata is not a YAML mapping"}]})
        self.cards.append(content)
        self.send(request, 200, {"warnings": []})

    def create_branch(self, request, repo: Repo, branch: str) -> None:
        if branch in repo.refs:
            return self.send(request, 409, {"error": f"Reference {branch} already exists"})
        repo.refs[branch] = repo.refs["main"]
        self.send(request, 200, {})

    def commit(self, request, repo_id: str, repo: Repo, revision: str, body: bytes) -> None:
        parent = repo.find(revision)
        if parent is None:
            return self.send(request, 404, {"error": f"Invalid rev id: {revision}"}, code="RevisionNotFound")
        files = {}
        for line in body.decode().splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                value = item["value"]
                if value.get("encoding") != "base64":
                    raise ValueError(f"unexpected file encoding {value.get('encoding')}")
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] != "header":
                raise ValueError(f"the fake Hub takes only inline files, got a '{item['key']}'")
        sha = repo.commit(revision, files, parent=parent)
        self.send(request, 200, {"commitUrl": f"{self.link(repo_id)}/commit/{sha}", "commitOid": sha, "success": True})

    def info(self, request, repo_id: str, repo: Repo, revision: str) -> None:
        sha = repo.find(revision)
        if sha is None:
            return self.send(request, 404, {"error": f"Invalid rev id: {revision}"}, code="RevisionNotFound")
        self.send(request, 200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": False,
                                 "siblings": [{"rfilename": name} for name in sorted(repo.commits[sha])]})

    def tree(self, request, repo: Repo, revision: str) -> None:
        """Every file and folder at ``revision`` (the recursive listing, in one page)."""
        sha = repo.find(revision)
        if sha is None:
            return self.send(request, 404, {"error": f"Invalid rev id: {revision}"}, code="RevisionNotFound")
        files = repo.commits[sha]
        folders = sorted({name.rpartition("/")[0] for name in files if "/" in name})
        entries = [{"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest()} for f in folders]
        entries += [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                    for name, data in sorted(files.items())]
        self.send(request, 200, entries)

    def resolve(self, request, method: str, repo: Repo | None, revision: str, filename: str) -> None:
        if repo is None:
            return self.send(request, 404, {"error": "Repository not found"}, code="RepoNotFound")
        sha = repo.find(revision)
        if sha is None:
            return self.send(request, 404, {"error": f"Invalid rev id: {revision}"}, code="RevisionNotFound")
        if filename not in repo.commits[sha]:
            return self.send(request, 404, {"error": "Entry not found"}, code="EntryNotFound")
        data = repo.commits[sha][filename]
        request.send_response(200)
        request.send_header("Content-Length", str(len(data)))
        request.send_header("Content-Type", "application/octet-stream")
        request.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        request.send_header("X-Repo-Commit", sha)
        request.end_headers()
        if method == "GET":
            request.wfile.write(data)

    # -- helpers ------------------------------------------------------------------------------------------------
    def link(self, repo_id: str) -> str:
        return f"{self.url}/{repo_id}"

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.commits[repo.find(revision)]

    @staticmethod
    def send(request, status: int, payload: dict | list, *, code: str | None = None) -> None:
        data = json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        if code:
            request.send_header("X-Error-Code", code)
            request.send_header("X-Error-Message", payload.get("error", ""))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(data)
