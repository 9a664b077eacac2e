"""A small in-memory Hugging Face Hub for tests: the HTTP API that `huggingface_hub` and `transformers` call to
publish a model and to load it by repo id, served from the standard library on 127.0.0.1.

It keeps every repo's git history as whole snapshots (tiny models only) and answers what the clients read:

- `POST /api/repos/create`, `GET /api/whoami-v2`, `POST /api/validate-yaml` (model-card metadata checks), and
  the side calls `POST /api/telemetry/…` and `GET /api/agent-harnesses` (answered with an empty registry);
- `POST /api/{type}s/{repo}/preupload/{rev}`: every file is "regular" (its bytes go base64 in the commit), so the
  client needs neither the LFS batch API nor Xet storage; `oid` is the git blob id of the file already there,
  which lets the client skip unchanged files;
- `POST /api/{type}s/{repo}/commit/{rev}` (NDJSON: `header`, `file`, `deletedFile`, `deletedFolder` lines),
  `POST /api/{type}s/{repo}/branch/{branch}`;
- `GET /api/{type}s/{repo}[/revision/{rev}]` (siblings, sha, cardData), `.../tree/{rev}[/{path}]`,
  `.../refs`, `.../commits/{rev}`;
- `GET`/`HEAD /{repo}/resolve/{rev}/{path}` with `ETag`, `X-Repo-Commit` and `Content-Length`, byte ranges, and
  the `X-Error-Code` headers (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) that `huggingface_hub` turns
  into its typed errors.

A request it does not know gets a 404, one it fails on a 500; both are kept in `HubServer.unhandled`, so a test
can check that the clients called nothing else. Run it by hand with `python tests/hub_server.py --port 8765` and
`HF_ENDPOINT` pointed at it.
"""

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

DEFAULT_BRANCH = "main"
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
# The first lines of the `.gitattributes` the Hub puts in every new repo's initial commit.
INITIAL_GITATTRIBUTES = b"".join(
    pattern + b" filter=lfs diff=lfs merge=lfs -text\n" for pattern in (b"*.bin", b"*.safetensors", b"*.pt")
)
API_REPO = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/(.*))?$")
RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


def git_blob_id(content: bytes) -> str:
    """The git object id of a file (what the Hub calls a regular file's `oid`, and its `ETag`)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class HubError(Exception):
    """An error answer: HTTP status, the Hub's `X-Error-Code` (if any), a message, and more fields for the body."""

    def __init__(self, status: int, message: str, error_code: str | None = None, **fields):
        super().__init__(message)
        self.status, self.message, self.error_code, self.fields = status, message, error_code, fields


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    files: dict[str, bytes]  # the whole tree at this commit


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit:
        oid = self.branches.get(revision, revision)
        if oid not in self.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[oid]

    def add_commit(self, branch: str, title: str, message: str, author: str, files: dict[str, bytes]) -> Commit:
        parent = self.branches.get(branch)
        digest = hashlib.sha1(json.dumps([parent, title, len(self.commits), now()]).encode())
        for path in sorted(files):
            digest.update(path.encode() + git_blob_id(files[path]).encode())
        commit = Commit(digest.hexdigest(), parent, title, message, author, now(), files)
        self.commits[commit.oid] = commit
        self.branches[branch] = commit.oid
        return commit

    def history(self, revision: str) -> list[Commit]:
        commit, commits = self.resolve(revision), []
        while commit is not None:
            commits.append(commit)
            commit = self.commits.get(commit.parent) if commit.parent else None
        return commits


def split_front_matter(content: str) -> tuple[object, list[str]]:
    """The YAML block at the top of a model card, parsed, and the errors met doing so."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
    if match is None:
        return None, []
    try:
        return yaml.safe_load(match.group(1)), []
    except yaml.YAMLError as error:
        return None, [f"YAML could not be parsed: {error}"]


_RESULT_KEYS = ("task", "dataset", "metrics")


def card_metadata_errors(metadata: dict) -> list[str]:
    """A subset of the Hub's model-card checks: value types, and the shape of `model-index` results."""
    errors = []
    for key in ("license", "library_name", "pipeline_tag", "model_name"):
        if key in metadata and not isinstance(metadata[key], str):
            errors.append(f'"{key}" must be a string')
    for key in ("tags", "datasets", "metrics", "language"):
        value = metadata.get(key)
        if value is not None and not isinstance(value, str):
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                errors.append(f'"{key}" must be a string or a list of strings')
    for i, entry in enumerate(metadata.get("model-index") or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            errors.append(f'"model-index[{i}].name" must be a string')
            continue
        for j, result in enumerate(entry.get("results") or []):
            where = f"model-index[{i}].results[{j}]"
            task, dataset, metrics = (result.get(key) if isinstance(result, dict) else None for key in _RESULT_KEYS)
            if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                errors.append(f'"{where}.task.type" must be a string')
            if not isinstance(dataset, dict) or not all(isinstance(dataset.get(key), str) for key in ("type", "name")):
                errors.append(f'"{where}.dataset" needs a string "type" and "name"')
            if not isinstance(metrics, list) or not metrics:
                errors.append(f'"{where}.metrics" must be a non-empty list')
                continue
            for k, metric in enumerate(metrics):
                if not isinstance(metric, dict) or not isinstance(metric.get("type"), str) or "value" not in metric:
                    errors.append(f'"{where}.metrics[{k}]" needs a string "type" and a "value"')
    return errors


class HubServer:
    """The Hub's state and an HTTP server on 127.0.0.1 serving it from a background thread.

    `tokens` maps each accepted access token to its user name; writes need one, reads of public repos do not.
    """

    def __init__(self, tokens: dict[str, str], port: int = 0):
        self.tokens = tokens
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) of every request answered
        self.unhandled: list[str] = []  # requests for routes it does not know, and those it failed on (500)
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="hub-server", daemon=True)

    def start(self) -> "HubServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ---- reading the state, for tests ----

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    # ---- the API ----

    def user_of(self, authorization: str | None) -> str | None:
        if authorization is None:
            return None
        token = authorization.removeprefix("Bearer ").strip()
        if token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def readable_repo(self, repo_type: str, repo_id: str, user: str | None) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and repo_id.split("/")[0] != user):
            raise HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        return repo

    def writable_repo(self, repo_type: str, repo_id: str, user: str | None) -> Repo:
        if user is None:
            raise HubError(401, "You must be authenticated to write to a repo")
        repo = self.readable_repo(repo_type, repo_id, user)
        if repo_id.split("/")[0] != user:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def create_repo(self, body: dict, user: str | None) -> dict:
        if user is None:
            raise HubError(401, "Invalid username or password.")
        namespace = body.get("organization") or user
        if namespace != user:
            raise HubError(403, f"You don't have the rights to create a repo under {namespace}")
        repo_type = body.get("type") or "model"
        repo_id = f"{namespace}/{body['name']}"
        url = self.url + ("/" if repo_type == "model" else f"/{repo_type}s/") + repo_id
        if (repo_type, repo_id) in self.repos:
            # `create_repo(exist_ok=True)` reads the repo's url from this answer
            raise HubError(409, f"You already created this {repo_type} repo", url=url)
        private = body.get("visibility", "private" if body.get("private") else "public") != "public"
        repo = Repo(repo_id, repo_type, private, created_at=now())
        repo.add_commit(DEFAULT_BRANCH, "initial commit", "", "system", {".gitattributes": INITIAL_GITATTRIBUTES})
        self.repos[(repo_type, repo_id)] = repo
        return {"url": url, "name": repo_id, "id": repo_id}

    def whoami(self, user: str | None) -> dict:
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return {"type": "user", "name": user, "fullname": user, "orgs": [], "auth": {"type": "access_token"}}

    def validate_yaml(self, body: dict) -> tuple[int, dict]:
        metadata, errors = split_front_matter(body.get("content", ""))
        warnings = []
        if not errors and not metadata:
            warnings.append({"message": "empty or missing yaml metadata in repo card"})
        elif not errors and not isinstance(metadata, dict):
            errors.append("YAML metadata must be a mapping")
        elif not errors:
            errors = card_metadata_errors(metadata)
        status = 400 if errors else 200
        return status, {"errors": [{"message": error} for error in errors], "warnings": warnings}

    def repo_info(self, repo: Repo, revision: str, files_metadata: bool) -> dict:
        commit = repo.resolve(revision)
        files = commit.files
        metadata, _ = split_front_matter(files.get("README.md", b"").decode("utf-8", "replace"))
        card_data = metadata if isinstance(metadata, dict) else {}
        info = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": list(card_data.get("tags") or []),
            "siblings": [self.sibling(path, content, files_metadata) for path, content in sorted(files.items())],
        }
        if card_data:
            info["cardData"] = {key: value for key, value in card_data.items() if key != "model-index"}
            info["model-index"] = card_data.get("model-index")
        for key in ("pipeline_tag", "library_name"):
            if key in card_data:
                info[key] = card_data[key]
        if "config.json" in files:
            config = json.loads(files["config.json"])
            info["config"] = {key: config[key] for key in ("architectures", "model_type", "auto_map") if key in config}
        return info

    @staticmethod
    def sibling(path: str, content: bytes, files_metadata: bool) -> dict:
        if not files_metadata:
            return {"rfilename": path}
        return {"rfilename": path, "size": len(content), "blobId": git_blob_id(content)}

    def tree(self, repo: Repo, revision: str, path: str, recursive: bool) -> list[dict]:
        files = repo.resolve(revision).files
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        below = {name[len(prefix) :]: content for name, content in files.items() if name.startswith(prefix)}
        if prefix and not below:
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        entries, folders = [], set()
        for name, content in sorted(below.items()):
            parts = name.split("/")
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                folders.add("/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                oid = git_blob_id(content)
                entries.append({"type": "file", "oid": oid, "size": len(content), "path": prefix + name})
        for folder in sorted(folders):
            oid = hashlib.sha1(f"{revision}:{prefix}{folder}".encode()).hexdigest()
            entries.append({"type": "directory", "oid": oid, "size": 0, "path": prefix + folder})
        return entries

    def preupload(self, repo: Repo, revision: str, body: dict) -> dict:
        head = repo.resolve(revision)
        files = head.files
        return {
            "files": [
                {
                    "path": item["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_id(files[item["path"]]) if item["path"] in files else None,
                }
                for item in body["files"]
            ],
            "commitOid": head.oid,
        }

    def commit(self, repo: Repo, revision: str, lines: list[dict], user: str) -> dict:
        if revision not in repo.branches:
            raise HubError(404, f"Invalid rev id: {revision} is not a branch", "RevisionNotFound")
        header = next((line["value"] for line in lines if line["key"] == "header"), {})
        head = repo.resolve(revision)
        if header.get("parentCommit") not in (None, head.oid):
            raise HubError(412, f"Parent commit {header['parentCommit']} is not the head of {revision}")
        files = dict(head.files)
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"Unsupported encoding for {value['path']}")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {path: content for path, content in files.items() if not path.startswith(folder)}
            elif key != "header":
                raise HubError(400, f"Commit operation {key!r} is not supported by this test Hub (no LFS)")
        commit = repo.add_commit(revision, header.get("summary", ""), header.get("description", ""), user, files)
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return {
            "success": True,
            "commitOid": commit.oid,
            "commitUrl": f"{self.url}/{prefix}{repo.repo_id}/commit/{commit.oid}",
            "hookOutput": "",
            "pullRequestUrl": None,
        }

    def create_branch(self, repo: Repo, branch: str, body: dict) -> dict:
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        repo.branches[branch] = repo.resolve(body.get("startingPoint") or DEFAULT_BRANCH).oid
        return {}

    def refs(self, repo: Repo) -> dict:
        branches = [
            {"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid} for name, oid in repo.branches.items()
        ]
        return {"branches": branches, "converts": [], "tags": [], "pullRequests": []}

    def commits(self, repo: Repo, revision: str) -> list[dict]:
        return [
            {"id": c.oid, "title": c.title, "message": c.message, "authors": [{"user": c.author}], "date": c.date}
            for c in repo.history(revision)
        ]


def _handler_for(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class HubRequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the clients' connection pools expect

        def log_message(self, format: str, *args) -> None:
            pass  # the test output stays quiet; `hub.requests` keeps the log

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def do_POST(self) -> None:
            self._answer(send_body=True)

        def do_DELETE(self) -> None:
            self._answer(send_body=True)

        def _answer(self, send_body: bool) -> None:
            url = urlsplit(self.path)
            try:
                body = self._read_body()
                with hub.lock:
                    status, headers, payload = self._route(url.path, parse_qs(url.query), body)
            except HubError as error:
                status, headers, payload = _error_answer(error)
            except Exception as error:  # a bug of the test Hub, not the client's: the tests see it in `unhandled`
                hub.unhandled.append(f"{self.command} {self.path}: {error!r}")
                status, headers, payload = _error_answer(HubError(500, f"Test Hub error: {error!r}"))
            hub.requests.append((self.command, url.path, status))
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(payload))}.items():
                self.send_header(name, value)
            self.end_headers()
            if send_body:
                self.wfile.write(payload)

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().strip().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _route(self, path: str, query: dict, body: bytes) -> tuple[int, dict, bytes]:
            user = hub.user_of(self.headers.get("Authorization"))
            method = self.command
            if method in ("GET", "HEAD") and (match := RESOLVE.match(path)):
                repo_type = REPO_TYPES[match.group(1)] if match.group(1) else "model"
                repo = hub.readable_repo(repo_type, match.group(2), user)
                return self._resolve(repo, unquote(match.group(3)), unquote(match.group(4)))
            if method == "POST" and path == "/api/repos/create":
                return _json(hub.create_repo(json.loads(body), user))
            if method == "GET" and path == "/api/whoami-v2":
                return _json(hub.whoami(user))
            if method == "POST" and path == "/api/validate-yaml":
                status, answer = hub.validate_yaml(json.loads(body))
                return _json(answer, status)
            if method == "POST" and path.startswith("/api/telemetry/"):
                return _json({})
            if method == "GET" and path == "/api/agent-harnesses":  # for the user agent; none known here
                return _json({"standardEnvVars": [], "harnesses": {}})
            if match := API_REPO.match(path):
                repo_type, repo_id, rest = REPO_TYPES[match.group(1)], match.group(2), match.group(3) or ""
                answer = self._repo_api(method, repo_type, repo_id, rest.split("/"), query, body, user)
                if answer is not None:
                    return _json(answer)
            hub.unhandled.append(f"{method} {self.path}")
            raise HubError(404, f"Not implemented by the test Hub: {method} {path}")

        def _repo_api(self, method, repo_type, repo_id, parts, query, body, user) -> dict | list | None:
            action, rev = parts[0], unquote(parts[1]) if len(parts) > 1 else DEFAULT_BRANCH
            files_metadata = query.get("blobs", ["false"])[0].lower() == "true"
            if method == "GET" and action == "":
                return hub.repo_info(hub.readable_repo(repo_type, repo_id, user), DEFAULT_BRANCH, files_metadata)
            if method == "GET" and action == "revision":
                return hub.repo_info(hub.readable_repo(repo_type, repo_id, user), rev, files_metadata)
            if method == "GET" and action == "tree":
                recursive = query.get("recursive", ["false"])[0].lower() == "true"
                path_in_repo = unquote("/".join(parts[2:]))
                return hub.tree(hub.readable_repo(repo_type, repo_id, user), rev, path_in_repo, recursive)
            if method == "GET" and action == "refs":
                return hub.refs(hub.readable_repo(repo_type, repo_id, user))
            if method == "GET" and action == "commits":
                return hub.commits(hub.readable_repo(repo_type, repo_id, user), rev)
            if method == "POST" and action in ("preupload", "commit", "branch"):
                if "create_pr" in query:
                    raise HubError(400, "Pull requests are not supported by this test Hub")
                repo = hub.writable_repo(repo_type, repo_id, user)
                if action == "preupload":
                    return hub.preupload(repo, rev, json.loads(body))
                if action == "commit":
                    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                    return hub.commit(repo, rev, lines, user)
                return hub.create_branch(repo, rev, json.loads(body or b"{}"))
            if method == "DELETE" and action == "branch":
                repo = hub.writable_repo(repo_type, repo_id, user)
                if rev == DEFAULT_BRANCH or repo.branches.pop(rev, None) is None:
                    raise HubError(400 if rev == DEFAULT_BRANCH else 404, f"Cannot delete branch {rev}")
                return {}
            return None

        def _resolve(self, repo: Repo, revision: str, path: str) -> tuple[int, dict, bytes]:
            commit = repo.resolve(revision)
            if path not in commit.files:
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
            content = commit.files[path]
            headers = {
                "Content-Type": "application/octet-stream",
                "ETag": f'"{git_blob_id(content)}"',
                "X-Repo-Commit": commit.oid,
                "Accept-Ranges": "bytes",
            }
            byte_range = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if byte_range is None:
                return 200, headers, content
            start = int(byte_range.group(1))
            end = int(byte_range.group(2)) if byte_range.group(2) else len(content) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            return HTTPStatus.PARTIAL_CONTENT, headers, content[start : end + 1]

    return HubRequestHandler


def _json(answer: dict | list, status: int = 200) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(answer).encode()


def _error_answer(error: HubError) -> tuple[int, dict, bytes]:
    message = error.message.encode("ascii", "replace").decode()  # header values are latin-1
    headers = {"Content-Type": "application/json", "X-Error-Message": message}
    if error.error_code:
        headers["X-Error-Code"] = error.error_code
    return error.status, headers, json.dumps({"error": error.message, **error.fields}).encode()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", default="hf_test_token", help="The access token accepted for user `--user`.")
    parser.add_argument("--user", default="user")
    args = parser.parse_args()
    server = HubServer({args.token: args.user}, port=args.port).start()
    print(f"Serving a test Hub at {server.url} (HF_ENDPOINT={server.url} HF_TOKEN={args.token}); Ctrl-C stops it.")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
