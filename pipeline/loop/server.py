"""The labelling page's server: the standard library's ``http.server``, a thread per request.

Only its user can reach it:

- it listens on 127.0.0.1 unless told otherwise;
- every request carries the session's token, in the address the command
  prints or in the cookie the first such request sets (HttpOnly,
  SameSite=Strict); anything else is refused with 403;
- a ``Host`` other than the address it serves on (or ``localhost``) is
  refused, against DNS rebinding, as Jupyter does;
- a request that changes anything is a POST carrying the token in a header;
- a photo is served by its id in the session's list, never by a path.

Scripts and styles are served from the package: the page works offline.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from http import cookies
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigError
from .labels import Changed
from .session import Session

STATIC = Path(__file__).with_name("static")
FILES = {"/static/label.js": ("label.js", "text/javascript"), "/static/label.css": ("label.css", "text/css")}
COOKIE = "label_session"
HEADER = "X-Label-Token"
MAX_BODY = 4096


class LabelServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, session: Session, host: str, port: int):
        super().__init__((host, port), _Handler)
        self.session = session
        self.token = secrets.token_urlsafe(32)
        self.lock = threading.Lock()  # one change of the session at a time
        self.done = threading.Event()
        self.hosts = {f"{name}:{self.server_port}" for name in ("127.0.0.1", "localhost", host)}

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_port}/?token={self.token}"


class _Handler(BaseHTTPRequestHandler):
    server: LabelServer

    def log_message(self, *args) -> None:  # the command line says what matters
        pass

    def _allowed(self) -> bool:
        """The Host is ours and the token is given (address or cookie); else 403 sent."""
        if self.headers.get("Host") not in self.server.hosts:
            self._send(403, b"unknown Host", "text/plain")
            return False
        given = parse_qs(urlsplit(self.path).query).get("token", [""])[0]
        jar = cookies.SimpleCookie(self.headers.get("Cookie", ""))
        held = jar[COOKIE].value if COOKIE in jar else ""
        if not (hmac.compare_digest(given, self.server.token) or hmac.compare_digest(held, self.server.token)):
            self._send(403, b"this page needs the address `label` printed, with its token", "text/plain")
            return False
        return True

    def _send(self, code: int, body: bytes, kind: str, cookie: bool = False, private: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        # A photo's address holds its content digest (see Session): the page's browser may keep it.
        self.send_header("Cache-Control", "private, max-age=86400" if private else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if cookie:
            self.send_header("Set-Cookie", f"{COOKIE}={self.server.token}; HttpOnly; SameSite=Strict; Path=/")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data) -> None:
        self._send(200, json.dumps(data).encode(), "application/json")

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if not self._allowed():
            return
        path = urlsplit(self.path).path
        if path == "/":
            page = (STATIC / "label.html").read_text(encoding="utf-8").replace("{token}", self.server.token)
            self._send(200, page.encode(), "text/html; charset=utf-8", cookie=True)
        elif path in FILES:
            name, kind = FILES[path]
            self._send(200, (STATIC / name).read_bytes(), f"{kind}; charset=utf-8")
        elif path == "/api/state":
            with self.server.lock:
                self._json(self.server.session.state())
        elif path.startswith("/photo/") and path[len("/photo/"):].isdigit():
            try:
                with self.server.lock:
                    image = self.server.session.thumbnail(int(path[len("/photo/"):]))
            except KeyError:
                self._send(404, b"no such photo in this session", "text/plain")
                return
            except Changed as exc:
                self._send(409, str(exc).encode(), "text/plain")
                return
            self._send(200, image, "image/jpeg", private=True)
        else:
            self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:  # noqa: N802
        if not self._allowed():
            return
        if not hmac.compare_digest(self.headers.get(HEADER, ""), self.server.token):
            self._send(403, b"a change needs the token in its header", "text/plain")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._send(413, b"too large", "text/plain")
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            action = urlsplit(self.path).path.removeprefix("/api/")
            with self.server.lock:
                self._act(action, body if isinstance(body, dict) else {})
                self._json(self.server.session.state())
        except KeyError:
            self._send(404, b"no such photo in this batch", "text/plain")
        except (ValueError, TypeError, ConfigError) as exc:
            self._send(400, str(exc).encode(), "text/plain")
        except Changed as exc:
            self._send(409, str(exc).encode(), "text/plain")

    def _act(self, action: str, body: dict) -> None:
        session = self.server.session
        if action == "label":
            session.label(int(body["id"]), str(body["label"]))
        elif action == "skip":
            session.skip(int(body["id"]))
        elif action == "undo":
            session.undo()
        elif action == "done":
            self.server.done.set()
        else:
            raise ValueError(f"unknown action {action!r}")

