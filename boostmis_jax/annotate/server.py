"""The annotation server: standard-library `http.server`, five routes, the CSV as the only state.

Why the standard library: the page needs five fixed routes on loopback for one person, and
`ThreadingHTTPServer` does that in a page of code with no new dependency to install, audit or pin. What a
framework would add (routing, sessions, templating) is not needed; what safety needs is done here:
- a random token (`secrets.token_urlsafe`) is required on every request, compared in constant time;
- it binds 127.0.0.1 unless told otherwise;
- it serves only its own page and the query PNGs by position in the manifest (`/img/3.png` maps to
  `queries/cycle_N/003.png`): no client-named path ever reaches the file system;
- POST bodies are JSON, at most 4 KiB; responses are `no-store`, `nosniff`, no referrer, no framing, and the
  page runs under a nonce-based Content-Security-Policy;
- optimistic concurrency: each row carries a version (a hash of its current answer, so a hand edit of the
  CSV changes it too); a write with a stale version gets 409 and the page reloads that state instead of
  overwriting a newer answer.
"""
from __future__ import annotations

import errno
import hashlib
import json
import re
import secrets
import shlex
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from boostmis_jax.errors import UserError, describe
from boostmis_jax.fsutil import file_lock
from boostmis_jax.oracle import (
    CyclePaths,
    LabelSpace,
    Manifest,
    cycle_paths,
    latest_cycle,
    read_answers,
    read_consumed,
    read_manifest,
    read_rows,
    validate_rows,
    write_answers,
)

MAX_BODY = 4096
LOCK_NAME = ".annotate.lock"  # in queries/: held while one answer is read, checked and written
_IMG_ROUTE = re.compile(r"^/img/(\d{1,6})\.png$")


class ApiError(Exception):
    """An HTTP error answer: status, one-line message, optional fresh row for the page."""

    def __init__(self, status: int, message: str, row: dict | None = None):
        super().__init__(message)
        self.status = int(status)
        self.row = row


def row_version(cycle: int, index: int, label: int | None) -> str:
    """Version of a row = hash of its answer: any change (page, other tab, hand edit) changes it."""
    return hashlib.sha256(f"{cycle}:{index}:{'' if label is None else label}".encode()).hexdigest()[:16]


def continue_command(manifest: Manifest) -> str | None:
    """The shell line that continues training: the recorded `main` argv, run from its directory."""
    if not manifest.command:
        return None
    line = shlex.join(manifest.command)
    return f"cd {shlex.quote(manifest.cwd)} && {line}" if manifest.cwd else line


class Annotator:
    """The page's logic without HTTP: reads, validates and writes one cycle's CSV under a lock.

    The CSV is re-read on every call, so what the page shows is always what is on disk (a hand edit
    included); nothing about answers is kept in memory."""

    def __init__(self, workdir: str | Path, cycle: int | None = None):
        self.workdir = Path(workdir)
        if cycle is None:
            cycle = latest_cycle(self.workdir)
            if cycle is None:
                raise UserError(
                    f"{self.workdir / 'queries'}: no cycle_N.csv to annotate; run the main command with "
                    "--config.al.oracle=files first (it writes the queries and stops)"
                )
        self.cycle = int(cycle)
        self.paths: CyclePaths = cycle_paths(self.cycle, self.workdir)
        if not self.paths.csv.exists():
            raise UserError(f"{self.paths.csv}: no such file; pick a --cycle that has queries or run main first")
        if read_consumed(self.paths) is not None:
            raise UserError(f"{self.paths.csv}: the run already read these answers and trained with them, so "
                            "edits would not be used; annotate the pending cycle (leave out --cycle), if any")
        self.manifest = read_manifest(self.cycle, self.workdir)
        self.labels = LabelSpace(len(self.manifest.class_names), self.manifest.class_names)
        self.queries = self.manifest.queries
        self.by_index = {int(q.index): q for q in self.queries}
        self.command = continue_command(self.manifest)
        self._lock = threading.Lock()
        self.answers()  # a CSV that is already broken fails here, in one line, before serving

    # -- reading -------------------------------------------------------------------------------------------
    def answers(self) -> dict[int, int]:
        """Current answers on disk, validated exactly as the files oracle does (empty labels allowed)."""
        return read_answers(self.paths.csv, self.queries, self.labels, partial=True)

    def complete(self) -> bool:
        try:
            read_answers(self.paths.csv, self.queries, self.labels)  # the files oracle's own check
        except UserError:
            return False
        return True

    def _row(self, pos: int, answers: dict[int, int]) -> dict[str, Any]:
        q = self.queries[pos]
        label = answers.get(int(q.index))
        return {"pos": pos, "index": int(q.index), "id": q.id, "selector": q.selector,
                "selectors": list(q.selectors) or [q.selector], "score": float(q.score),
                "predicted": int(q.predicted), "predicted_name": self.labels.name(int(q.predicted)),
                "confidence": q.confidence, "label": label,
                "version": row_version(self.cycle, int(q.index), label)}

    def state(self) -> dict[str, Any]:
        with self._lock:
            answers = self.answers()
        rows = [self._row(pos, answers) for pos in range(len(self.queries))]
        return {"cycle": self.cycle, "csv": str(self.paths.csv), "class_names": self.labels.class_names,
                "has_images": self.manifest.has_images, "rows": rows, "answered": len(answers),
                "total": len(rows), "complete": len(answers) == len(rows), "command": self.command}

    # -- writing -------------------------------------------------------------------------------------------
    def answer(self, index: Any, label: Any, version: Any) -> dict[str, Any]:
        """Set (label = class id or name) or clear (label = None) one row; returns the row as stored."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise ApiError(HTTPStatus.BAD_REQUEST, "index must be an integer row index from the page")
        if label is not None and (isinstance(label, bool) or not isinstance(label, (int, str))):
            raise ApiError(HTTPStatus.BAD_REQUEST, "label must be a class id, a class name or null")
        if index not in self.by_index:
            raise ApiError(HTTPStatus.NOT_FOUND,
                           f"index {index} is not among cycle {self.cycle}'s queries; reload the page")
        pos = next(p for p, q in enumerate(self.queries) if int(q.index) == index)
        # The thread lock orders this process's requests; the file lock orders every process's (two
        # pages on one workdir, a second browser's server): read-check-write is one step for all of them.
        with self._lock, file_lock(self.paths.csv.parent / LOCK_NAME):
            if read_consumed(self.paths) is not None:  # the run read the CSV while this page was open
                raise ApiError(HTTPStatus.CONFLICT, f"the run already read {self.paths.csv.name} and trained "
                               "with it; a change here would not be used")
            rows = read_rows(self.paths.csv)
            current = validate_rows(self.paths.csv, rows, self.queries, self.labels, partial=True)
            if version != row_version(self.cycle, index, current.get(index)):
                raise ApiError(HTTPStatus.CONFLICT,
                               f"{self.queries[pos].id} was changed elsewhere (another tab or the CSV); "
                               "showing the newer answer", row=self._row(pos, current))
            cell = ("" if label is None else self.labels.cell(label) if isinstance(label, int)
                    and 0 <= label < self.labels.num_classes else str(label).strip())
            edited = [r._replace(label=cell) if _is_index(r.index, index) else r for r in rows]
            try:
                new = validate_rows(self.paths.csv, edited, self.queries, self.labels, partial=True)
            except UserError as e:
                raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, str(e)) from None
            write_answers(self.paths.csv, self.queries, self.labels, new)
            return self._row(pos, new)


def _is_index(cell: str, index: int) -> bool:
    try:
        return int(cell) == index
    except ValueError:
        return False


class AnnotateServer(ThreadingHTTPServer):
    """ThreadingHTTPServer holding the Annotator, the token and the finish request."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], annotator: Annotator, token: str, then_train: bool):
        self.annotator = annotator
        self.token = token
        self.then_train = bool(then_train)
        self.finished = threading.Event()  # the page asked to continue training
        self.announced = threading.Event()  # "all answered" was printed once
        self.page = resources.files("boostmis_jax.annotate").joinpath("static/index.html").read_text("utf-8")
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{shown}:{port}/?token={self.token}"


class Handler(BaseHTTPRequestHandler):
    server: AnnotateServer
    server_version = "boostmis-annotate"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # request lines carry the token; keep them out of the terminal and its scrollback

    # -- plumbing ------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = {"Content-Type": ctype, "Content-Length": str(len(body)), "Cache-Control": "no-store",
                   "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                   "X-Frame-Options": "DENY", **(extra or {})}
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: dict) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

    def _error(self, status: int, message: str, row: dict | None = None) -> None:
        self._json(status, {"error": message, **({"row": row} if row is not None else {})})

    def _authorized(self, query: dict[str, list[str]]) -> bool:
        given = self.headers.get("X-Token") or (query.get("token") or [""])[0]
        return secrets.compare_digest(given.encode(), self.server.token.encode())

    def _body(self) -> dict:
        try:
            n = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "a JSON body with Content-Length is required") from None
        if n < 0 or n > MAX_BODY:
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            raise ApiError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send Content-Type: application/json")
        try:
            obj = json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            raise ApiError(HTTPStatus.BAD_REQUEST, "body is not JSON") from None
        if not isinstance(obj, dict):
            raise ApiError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        return obj

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        if url.path == "/favicon.ico":  # browsers ask without the token; answer with nothing
            self._send(HTTPStatus.NO_CONTENT, b"", "text/plain")
            return
        if not self._authorized(parse_qs(url.query)):
            self._send(HTTPStatus.FORBIDDEN, b"missing or wrong token: open the address that annotate printed\n",
                       "text/plain; charset=utf-8")
            return
        try:
            if method == "GET":
                self._get(url.path)
            else:
                self._post(url.path)
        except ApiError as e:
            self._error(e.status, str(e), e.row)
        except UserError as e:  # the CSV on disk is broken (hand edit): say how to fix it
            self._error(HTTPStatus.UNPROCESSABLE_ENTITY, str(e))
        except OSError as e:  # disk full, permissions: the CSV is unchanged (atomic write); say so
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR,
                        f"could not write {self.server.annotator.paths.csv} ({e}); it is unchanged")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # -- routes --------------------------------------------------------------------------------------------
    def _get(self, path: str) -> None:
        a = self.server.annotator
        if path in ("/", "/index.html"):
            nonce = secrets.token_urlsafe(16)
            csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self'; "
                   "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
            body = self.server.page.replace("__NONCE__", nonce).encode()
            self._send(HTTPStatus.OK, body, "text/html; charset=utf-8", {"Content-Security-Policy": csp})
            return
        if path == "/api/state":
            self._json(HTTPStatus.OK, {**a.state(), "then_train": self.server.then_train,
                                       "finished": self.server.finished.is_set()})
            return
        m = _IMG_ROUTE.match(path)
        if m and a.manifest.has_images and int(m.group(1)) < len(a.queries):
            file = a.paths.image(int(m.group(1)))  # built from the position, never from the client's path
            if file.is_file():
                self._send(HTTPStatus.OK, file.read_bytes(), "image/png")
                return
        raise ApiError(HTTPStatus.NOT_FOUND, "not found")

    def _post(self, path: str) -> None:
        a = self.server.annotator
        if path == "/api/answer":
            body = self._body()
            row = a.answer(body.get("index"), body.get("label"), body.get("version"))
            self._json(HTTPStatus.OK, {"row": row})
            if a.complete() and not self.server.announced.is_set():
                self.server.announced.set()
                print(f"all {len(a.queries)} queries of cycle {a.cycle} answered in {a.paths.csv}"
                      + (f"; continue with: {a.command}" if a.command else ""), flush=True)
            return
        if path == "/api/finish":
            self._body()
            if not self.server.then_train:
                raise ApiError(HTTPStatus.BAD_REQUEST, "annotate runs without --then-train; run the command shown")
            try:
                read_answers(a.paths.csv, a.queries, a.labels)  # exactly what the files oracle will accept
            except UserError as e:
                raise ApiError(HTTPStatus.CONFLICT, str(e)) from None
            self._json(HTTPStatus.OK, {"ok": True})
            self.server.finished.set()
            threading.Thread(target=self.server.shutdown, daemon=True).start()  # not from this handler thread
            return
        raise ApiError(HTTPStatus.NOT_FOUND, "not found")


def make_server(workdir: str | Path, *, cycle: int | None = None, host: str = "127.0.0.1", port: int = 0,
                token: str | None = None, then_train: bool = False) -> AnnotateServer:
    """Bind (port 0 = any free port) and return the server; call serve_forever() to run it."""
    annotator = Annotator(workdir, cycle)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise UserError(f"--port {port}: not a TCP port; pass a port in 1..65535 (0 picks a free one)")
    try:
        return AnnotateServer((host, port), annotator, token or secrets.token_urlsafe(24), then_train)
    except OSError as e:
        raise UserError(bind_error(host, port, e)) from None
    except (OverflowError, ValueError, UnicodeError) as e:  # a host no resolver accepts
        raise UserError(f"--host {host!r}: not a host name or address ({describe(e)}); pass --host 127.0.0.1 "
                        "(this machine) or 0.0.0.0 (every interface)") from None


def bind_error(host: str, port: int, e: OSError) -> str:
    """The cause and the fix of a failed bind: a busy port, a privileged port, or a bad host."""
    if isinstance(e, socket.gaierror):
        return (f"--host {host!r}: not a known host name ({e.strerror or e}); pass --host 127.0.0.1 (this "
                "machine) or 0.0.0.0 (every interface)")
    if e.errno == errno.EADDRINUSE:
        return (f"port {port} on {host} is in use (another annotate?); pass another --port "
                "(0 picks a free one)")
    if e.errno == errno.EACCES:
        return f"port {port}: binding it needs privileges; pass a --port above 1023 (0 picks a free one)"
    if e.errno == errno.EADDRNOTAVAIL:
        return (f"--host {host!r}: not an address of this machine; pass --host 127.0.0.1 (this machine) or "
                "0.0.0.0 (every interface)")
    return f"cannot listen on {host}:{port} ({e.strerror or e}); check --host and --port (0 picks a free one)"
