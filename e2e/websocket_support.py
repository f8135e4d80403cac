"""A real WebSocket server and client for the e2e suite (the `websockets` package, sync API, loopback only)."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import threading

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import serve as ws_serve

import e2e_support as s


class WebSocketEcho:
    """A `websockets` server on 127.0.0.1:<free port>: records every HTTP request that reaches it (before the
    handshake is validated) and every message; sends the identity it was given, then echoes each message."""

    def __init__(self) -> None:
        self.requests: list = []   # (path, [(name, value)]) of every request, upgraded or not
        self.messages: list = []   # (path, message) of every frame received
        self.lock = threading.Lock()
        self.server = ws_serve(self._handle, s.LOOPBACK, 0, process_request=self._record, compression=None,
                               ping_interval=None, open_timeout=s.SOCKET_TIMEOUT)
        self.port = self.server.socket.getsockname()[1]
        self.url = f"http://{s.LOOPBACK}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="backend-ws", daemon=True)
        self.thread.start()

    def _record(self, connection, request):
        with self.lock:
            self.requests.append((request.path, list(request.headers.raw_items())))
        return None  # go on with the handshake

    def _handle(self, connection) -> None:
        path = connection.request.path
        headers = list(connection.request.headers.raw_items())
        connection.send(json.dumps({"path": path, "headers": headers}))
        for message in connection:
            with self.lock:
                self.messages.append((path, message))
            connection.send(message)

    def reached(self, marker: str) -> list:
        """Requests and messages whose path contains `marker`."""
        with self.lock:
            return ([p for p, _ in self.requests if marker in p] + [p for p, _ in self.messages if marker in p])

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)


def ws_open(port: int, path: str, headers=()):
    """A WebSocket client connection to 127.0.0.1:port with Host mcp.example.com (never via an HTTP proxy)."""
    sock = socket.create_connection((s.LOOPBACK, port), timeout=s.SOCKET_TIMEOUT)
    try:
        return ws_connect(f"ws://{s.HOST}{path}", sock=sock, additional_headers=list(headers), proxy=None,
                          compression=None, ping_interval=None, open_timeout=s.SOCKET_TIMEOUT,
                          close_timeout=2)
    except BaseException:
        sock.close()
        raise


def ws_refused(port: int, path: str, headers=()):
    """Asks to upgrade and expects a refusal; returns the websockets Response (status, headers, body)."""
    with pytest.raises(InvalidStatus) as refused:
        connection = ws_open(port, path, headers)
        connection.close()
    return refused.value.response


def raw_upgrade_with_early_frame(port: int, path: str, headers=()) -> bytes:
    """Sends an upgrade request and, without waiting for the answer, a masked text frame; returns the answer head."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {s.HOST}", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: " + base64.b64encode(secrets.token_bytes(16)).decode(), "Sec-WebSocket-Version: 13"]
    lines += [f"{name}: {value}" for name, value in headers]
    payload, mask = b"early frame", secrets.token_bytes(4)
    frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    with socket.create_connection((s.LOOPBACK, port), timeout=s.SOCKET_TIMEOUT) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + frame)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n\r\n", 1)[0]
