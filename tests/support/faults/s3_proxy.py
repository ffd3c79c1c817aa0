"""A fault-injecting HTTP proxy in front of a real S3 server (moto), and that server with a restart.

`FaultProxy(upstream)` forwards every request to the S3 server unchanged unless a `Fault` in its schedule
matches it (method, path regex; skip `after` matches, then hit `times` of them, every `every`-th). Actions:
  slowdown  503 SlowDown (S3's throttling answer)     error500  500 InternalError
  drop      read the request, close without answering (the request never reached S3)
  lost      forward it (S3 did the work), then close without answering (the answer was lost)
  truncate  forward it, send the headers and half the body, then close (a download cut mid-body)
  delay     wait `delay_s`, then forward it (a slow server; keeps a reader busy long enough to kill it)
While the upstream is down (`S3Server.restart`) the proxy closes client connections, like a dead server.
`proxy.log` records (method, path, status or action) of every request, so tests can check what happened.
Used by tests/stages/test_storage_retry.py, tests/pipeline/test_s3_faults.py and bench/soak.py.
"""
from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

ACTIONS = ("slowdown", "error500", "drop", "lost", "truncate", "delay")
_BODIES = {"slowdown": (503, "SlowDown", "Please reduce your request rate."),
           "error500": (500, "InternalError", "We encountered an internal error. Please try again.")}


@dataclass
class Fault:
    action: str                 # one of ACTIONS
    method: str = ""            # GET / PUT / HEAD / POST / DELETE; "" = any
    path: str = ""              # regex searched in the request path (with query); "" = any
    times: int = 1              # how many matching requests get the fault (0 = all of them)
    after: int = 0              # let this many matching requests through first
    every: int = 1              # then fault every n-th match
    delay_s: float = 1.0        # for `delay`
    seen: int = 0               # matches so far
    hits: int = 0               # faults injected so far

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; use one of {ACTIONS}")

    def fires(self, method: str, path: str) -> bool:
        if (self.method and method != self.method) or (self.path and not re.search(self.path, path)):
            return False
        self.seen += 1
        n = self.seen - self.after
        if n <= 0 or (self.times and self.hits >= self.times) or (n - 1) % self.every:
            return False
        self.hits += 1
        return True


class FaultProxy:
    """Threaded HTTP/1.1 proxy; `url` is its endpoint. `faults` may be replaced or extended at any time."""

    def __init__(self, upstream: str) -> None:
        u = urlparse(upstream)
        self.upstream = (u.hostname, u.port)
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def schedule(self, *faults: Fault) -> "FaultProxy":
        with self._lock:
            self.faults = list(faults)
        return self

    def pick(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.fires(method, path):
                    return f
        return None

    def record(self, method: str, path: str, what: str) -> None:
        with self._lock:
            self.log.append((method, path, what))

    def injected(self) -> dict[str, int]:
        """Faults injected so far, by action."""
        with self._lock:
            out: dict[str, int] = {}
            for f in self.faults:
                out[f.action] = out.get(f.action, 0) + f.hits
            return out

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that dies mid-request (a killed worker) is expected here, not worth a traceback."""


def _handler(proxy: FaultProxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    chunk = self.rfile.read(size + 2)[:size]   # the chunk and its CRLF
                    if not size:
                        while self.rfile.readline().strip():   # trailers
                            pass
                        break
                    chunks.append(chunk)
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _abort(self) -> None:
            """Close the client connection with a reset, without an answer."""
            self.close_connection = True
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass

        def _error(self, action: str) -> None:
            status, code, message = _BODIES[action]
            body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}'
                    f"</Message><RequestId>fault-proxy</RequestId></Error>").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _forward(self, body: bytes):
            conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding",)}
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            return resp, data

        def _handle(self) -> None:
            body = self._body()
            fault = proxy.pick(self.command, self.path)
            action = fault.action if fault else ""
            if action == "delay":
                time.sleep(fault.delay_s)
            if action in ("slowdown", "error500"):
                proxy.record(self.command, self.path, action)
                return self._error(action)
            if action == "drop":
                proxy.record(self.command, self.path, action)
                return self._abort()
            try:
                resp, data = self._forward(body)
            except OSError:                    # the S3 server is down: so is this endpoint
                proxy.record(self.command, self.path, "upstream-down")
                return self._abort()
            proxy.record(self.command, self.path, str(resp.status) if action in ("", "delay") else action)
            if action == "lost":
                return self._abort()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                    self.send_header(k, v)
            length = resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
            self.send_header("Content-Length", length)
            self.end_headers()
            if self.command == "HEAD":
                return
            if action == "truncate":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                return self._abort()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler


class S3Server:
    """moto's S3 server on a fixed port that can be restarted: its buckets live in this process's moto
    backends, so they survive a restart the way a real server's disk does."""

    def __init__(self, port: int = 0) -> None:
        from moto.server import ThreadedMotoServer
        self._cls, self._server = ThreadedMotoServer, None
        self.port = port or _free_port()
        self.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._server = self._cls(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        self._server.stop()
        self._server._server.server_close()   # moto's stop() keeps the socket: connections would queue

    def restart(self, down_s: float) -> None:
        """Down for `down_s` seconds (connections refused), then up again with the same data."""
        self.stop()
        time.sleep(down_s)
        self.start()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
