"""Real network peers for the audit sinks, on loopback: a syslog TCP(/TLS) listener and an HTTP event collector.

They speak the wire formats (RFC 6587 octet-counted frames, Splunk HEC JSON with its token header) and record
what arrived, so tests read what a sink really sent.
"""

from __future__ import annotations

import http.server
import json
import socket
import socketserver
import ssl
import threading
from typing import Any


class _Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[Any] = []

    def add(self, item: Any) -> None:
        with self.lock:
            self.records.append(item)


def parse_frames(data: bytes) -> list[str]:
    """Split octet-counted syslog frames (``LEN SP MSG``)."""
    messages = []
    while data:
        length, _unused, rest = data.partition(b" ")
        size = int(length)
        messages.append(rest[:size].decode("utf-8"))
        data = rest[size:]
    return messages


class SyslogListener:
    """Accepts TCP (or TLS) connections and records every RFC 5424 message received."""

    def __init__(self, port: int = 0, context: ssl.SSLContext | None = None) -> None:
        recorder = self.recorder = _Recorder()

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock = context.wrap_socket(self.request, server_side=True) if context else self.request
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
                for message in parse_frames(b"".join(chunks)):
                    recorder.add(message)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def messages(self) -> list[str]:
        with self.recorder.lock:
            return list(self.recorder.records)

    def __enter__(self) -> SyslogListener:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


class HecCollector:
    """An HTTP event collector: checks ``Authorization: Splunk <token>`` and records each event envelope."""

    def __init__(self, token: str) -> None:
        recorder = self.recorder = _Recorder()
        self.requests: list[dict[str, str]] = []
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                requests.append({"path": self.path, "authorization": self.headers.get("Authorization", "")})
                if self.headers.get("Authorization") != f"Splunk {token}":
                    return self._reply(401, {"text": "Invalid token", "code": 4})
                if not body:
                    return self._reply(400, {"text": "No data", "code": 5})
                decoder, text, position = json.JSONDecoder(), body.decode("utf-8"), 0
                while position < len(text):
                    envelope, position = decoder.raw_decode(text, position)
                    recorder.add(envelope)
                return self._reply(200, {"text": "Success", "code": 0})

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/collector/event"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def events(self) -> list[dict[str, Any]]:
        with self.recorder.lock:
            return list(self.recorder.records)

    def __enter__(self) -> HecCollector:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
