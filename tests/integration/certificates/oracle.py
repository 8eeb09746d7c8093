"""Independent checks for the certificates area: the openssl CLI, never this collection's parsing."""

from __future__ import annotations

import subprocess


def openssl(*args: str, stdin: bytes | None = None) -> str:
    """The independent oracle: the openssl CLI, never this collection's parsing."""
    done = subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=False, timeout=30)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode()


def openssl_fingerprint(path: str, inform: str = "PEM") -> str:
    text = openssl("x509", "-in", path, "-inform", inform, "-noout", "-fingerprint", "-sha256")
    return text.strip().split("=", 1)[1].replace(":", "").lower()
