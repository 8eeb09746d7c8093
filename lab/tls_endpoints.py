# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Serve the lab's TLS endpoints on loopback: one thread per port, one process for all.

Usage: python tls_endpoints.py CONFIG.json

The config (written by `keyops_lab.py up`) lists ports, each with a default certificate chain and key and,
optionally, other chains chosen by SNI. Every connection gets a tiny HTTP answer naming the endpoint's kind,
so a scanner can use either a raw TLS handshake or an HTTPS GET.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socketserver
import ssl
import sys
import threading
from pathlib import Path
from typing import Any


def _context(chain_file: str, key_file: str, weak: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if weak:
        # OpenSSL's default security level refuses to load an RSA-1024 certificate at all.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(chain_file, key_file)
    return context


def _sni_selector(by_name: dict[str, ssl.SSLContext]) -> Any:
    def select(ssl_socket: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext) -> None:
        chosen = by_name.get((server_name or "").lower())
        if chosen is not None:
            ssl_socket.context = chosen
        return None

    return select


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, context: ssl.SSLContext, kind: str) -> None:
        self.tls_context = context
        self.kind = kind
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.request.settimeout(5)
        try:
            with self.server.tls_context.wrap_socket(self.request, server_side=True) as tls:
                # A scanner that only wanted the handshake may already be gone: nothing to answer then.
                with contextlib.suppress(TimeoutError, ssl.SSLError, OSError):
                    tls.recv(4096)
                body = f"keyops lab TLS endpoint: {self.server.kind}\n".encode()
                tls.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
        except (ssl.SSLError, OSError, TimeoutError):
            return  # failed handshakes are expected here (clients that reject the weak or expired chains)


def main(config_path: str) -> int:
    config = json.loads(Path(config_path).read_text())
    servers: list[_Server] = []
    for endpoint in config["endpoints"]:
        weak = bool(endpoint.get("weak"))
        context = _context(endpoint["chain_file"], endpoint["key_file"], weak)
        by_name = {
            name.lower(): _context(item["chain_file"], item["key_file"], bool(item.get("weak")))
            for name, item in endpoint.get("sni", {}).items()
        }
        if by_name:
            context.sni_callback = _sni_selector(by_name)
        servers.append(_Server(endpoint["port"], context, endpoint["kind"]))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threads = [
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True) for server in servers
    ]
    for thread in threads:
        thread.start()
    print(f"serving {len(servers)} TLS endpoints", flush=True)
    while not stop.wait(0.5):
        pass
    for server in servers:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
