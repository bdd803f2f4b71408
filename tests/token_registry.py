"""A registry front that answers as Docker Hub does: /v2/ requests without a
valid bearer token get 401 `WWW-Authenticate: Bearer realm=...,service=...,
scope=...`; /token hands out tokens for Basic user:password; everything
else is passed on to the real registry behind it.

Usage: python token_registry.py LISTEN_PORT UPSTREAM_PORT USER PASSWORD LOG
(started by tests/test_registry.py inside a test namespace, stopped by pid).
Every request is appended to LOG as `METHOD PATH STATUS`, so tests can see
what a client fetched."""
from __future__ import annotations

import base64
import http.client
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, UPSTREAM, USER, PASSWORD, LOG = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
TOKENS: set[str] = set()
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _log(self, status: int) -> None:
        with LOCK, open(LOG, "a") as fh:
            fh.write(f"{self.command} {self.path} {status}\n")

    def _reply(self, status: int, body: bytes = b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self._log(status)

    def _token(self):
        auth = self.headers.get("Authorization", "")
        want = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if auth != want:
            return self._reply(401, b'{"details": "wrong credentials"}')
        token = os.urandom(16).hex()
        TOKENS.add(token)
        return self._reply(200, json.dumps({"token": token}).encode(), [("Content-Type", "application/json")])

    def _any(self):
        if self.path.startswith("/token"):
            return self._token()
        auth = self.headers.get("Authorization", "")
        if not (auth.startswith("Bearer ") and auth[7:] in TOKENS):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            repo = self.path.split("/")[2:4] if self.path.count("/") > 3 else []
            scope = f',scope="repository:{"/".join(repo[:1])}:pull"' if repo else ""
            challenge = f'Bearer realm="http://127.0.0.1:{PORT}/token",service="test-registry"{scope}'
            return self._reply(401, b'{"errors": [{"code": "UNAUTHORIZED", "message": "token needed"}]}',
                               [("WWW-Authenticate", challenge), ("Content-Type", "application/json")])
        body = None
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            body = self.rfile.read(length)
        conn = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("authorization", "connection")}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self._log(resp.status)
        conn.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _any


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
