"""An authenticating proxy in front of a real `mlflow server`, and the scan for the credentials it
expects: the security drill's credentials check (issue 16, drill 8; tests/test_search_server.py runs
its search through the proxy, tests/test_security.py checks the scan)."""

from __future__ import annotations

import base64
import http.client
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["ENV_PASSWORD", "PASSWORD", "USER", "AuthProxy", "leaks", "secrets"]

USER, PASSWORD, ENV_PASSWORD = "ncuser", "s3cret-uri-PW", "s3cret-env-PW2"


class AuthProxy(ThreadingHTTPServer):
    """An HTTP proxy in front of `upstream` that answers 401 unless a request carries Basic auth
    USER:PASSWORD, the way a tracking server behind authentication does; it counts both."""

    daemon_threads = True

    def __init__(self, upstream: str):
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.authorized = self.refused = 0
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: AuthProxy

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size)
                self.rfile.readline()
                if not size:
                    return b"".join(chunks)
                chunks.append(chunk)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _relay(self) -> None:
        body = self._body()
        if self.headers.get("Authorization") != self.server.expected:
            self.server.refused += 1
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.server.authorized += 1
        skip = {"host", "authorization", "connection", "transfer-encoding", "content-length"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=300)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _relay

    def log_message(self, *args: object) -> None:
        pass


def secrets() -> list[bytes]:
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode())
    return [PASSWORD.encode(), ENV_PASSWORD.encode(), basic, base64.b64encode(f"{USER}:{ENV_PASSWORD}".encode())]


def leaks(blob: bytes) -> list[str]:
    return [s.decode() for s in secrets() if s in blob]
