"""How long x509_inventory takes over 1,000 certificate files and 200 TLS endpoints on loopback.

Run: .venv/bin/python bench/x509_scan.py [--files 1000] [--endpoints 200] [--workers 16]

Makes the files (PEM single and bundles, DER, PKCS#12) in a temporary folder and serves the endpoints from one
process (lab/tls_endpoints.py, one listening socket per port on 127.0.0.1, SNI on every fifth). Prints seconds
for files, endpoints and both in one call, in-process and through ansible-playbook, and the ratio of the
one-worker baseline to the pool.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, ".build", "collections"), os.path.join(ROOT, "lab")]

import labpki  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.serialization import pkcs12  # noqa: E402

from ansible_collections.keyops.runbooks.plugins.module_utils import x509 as scan_x509  # noqa: E402
from tests.support.playbook import run_module  # noqa: E402

P12_PASSWORD = "bench-p12"


def build_files(root: Path, count: int, issuer: labpki.Issuer, root_ca: labpki.Issuer) -> None:
    now = labpki.utc_now()
    day = dt.timedelta(days=1)
    # A handful of keys reused: key generation is not what is measured.
    keys = [labpki.new_key("ec-p256") for _unused in range(8)] + [labpki.new_key("rsa-2048")]
    for number in range(count):
        key = keys[number % len(keys)]
        name = f"svc{number}.bench.internal"
        cert = labpki.make_leaf(name, key, issuer, now - 30 * day, now + (number % 400 - 20) * day)
        folder = root / f"team{number % 20:02d}" / ("archive" if number % 7 == 0 else "live")
        folder.mkdir(parents=True, exist_ok=True)
        kind = number % 10
        if kind < 6:
            labpki.write_certs(folder / f"{name}.pem", cert)
        elif kind < 8:
            (folder / f"{name}-fullchain.pem").write_bytes(
                b"# chain\n" + labpki.certs_pem(cert, issuer.cert, root_ca.cert)
            )
        elif kind == 8:
            (folder / f"{name}.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
        else:
            (folder / f"{name}.p12").write_bytes(
                pkcs12.serialize_key_and_certificates(
                    name.encode(),
                    key,
                    cert,
                    [issuer.cert],
                    serialization.BestAvailableEncryption(P12_PASSWORD.encode()),
                )
            )


def free_ports(count: int) -> list[int]:
    sockets = []
    for _unused in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def serve_endpoints(folder: Path, count: int, issuer: labpki.Issuer) -> tuple[subprocess.Popen, list[dict]]:
    now = labpki.utc_now()
    day = dt.timedelta(days=1)
    key = labpki.new_key("ec-p256")
    chain_file, key_file = folder / "endpoint.pem", folder / "endpoint.key"
    cert = labpki.make_leaf(
        "edge.bench.internal",
        key,
        issuer,
        now - day,
        now + 60 * day,
        dns_names=["edge.bench.internal", "api.bench.internal"],
    )
    labpki.write_certs(chain_file, cert, issuer.cert)
    labpki.write_key(key_file, key)
    sni_key = labpki.new_key("ec-p256")
    sni_cert = labpki.make_leaf("old.bench.internal", sni_key, issuer, now - 100 * day, now - day)
    labpki.write_certs(folder / "sni.pem", sni_cert, issuer.cert)
    labpki.write_key(folder / "sni.key", sni_key)

    config, endpoints = [], []
    for index, port in enumerate(free_ports(count)):
        entry = {"port": port, "kind": "bench", "chain_file": str(chain_file), "key_file": str(key_file)}
        name = "edge.bench.internal"
        if index % 5 == 0:
            entry["sni"] = {
                "old.bench.internal": {"chain_file": str(folder / "sni.pem"), "key_file": str(folder / "sni.key")}
            }
            name = "old.bench.internal"
        config.append(entry)
        endpoints.append({"host": "127.0.0.1", "port": port, "server_name": name})
    config_file = folder / "endpoints.json"
    config_file.write_text(json.dumps({"endpoints": config}))
    server = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "lab", "tls_endpoints.py"), str(config_file)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    server.stdout.readline()  # "serving N TLS endpoints"
    return server, endpoints


def timed(files: list[str], endpoints: list[dict], workers: int, anchors: list) -> tuple[float, int, int]:
    options = scan_x509.ScanOptions(as_of=scan_x509.as_of_time(None), anchors=anchors, pkcs12_passwords=[P12_PASSWORD])
    targets = [scan_x509.Endpoint(item["host"], item["port"], item["server_name"]) for item in endpoints]
    start = time.perf_counter()
    result = scan_x509.scan(files, targets, options, workers)
    return time.perf_counter() - start, len(result.records), len(result.errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=200)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()

    root_key = labpki.new_key("ec-p384")
    root_ca = labpki.Issuer(labpki.make_ca("Bench Root", root_key), root_key)
    issuing_key = labpki.new_key("ec-p256")
    issuer = labpki.Issuer(labpki.make_ca("Bench Issuing", issuing_key, issuer=root_ca), issuing_key)

    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        build_files(folder / "certs", args.files, issuer, root_ca)
        labpki.write_certs(folder / "roots.pem", root_ca.cert)
        server, endpoints = serve_endpoints(folder, args.endpoints, issuer)
        try:
            files, _unused = scan_x509.discover_files([str(folder / "certs")], scan_x509.DEFAULT_INCLUDE, [], True)
            anchors = [root_ca.cert]
            print(
                f"{len(files)} certificate files, {len(endpoints)} TLS endpoints on loopback, "
                f"{args.workers} workers, {os.cpu_count()} CPUs"
            )
            rows = []
            for label, scan_files, scan_endpoints in (
                ("files", files, []),
                ("endpoints", [], endpoints),
                ("both", files, endpoints),
            ):
                pooled = timed(scan_files, scan_endpoints, args.workers, anchors)
                baseline = timed(scan_files, scan_endpoints, 1, anchors)
                rows.append((label, pooled, baseline))
                print(
                    f"  {label:<10} {pooled[0]:6.2f} s with the pool ({pooled[1]} certificates, {pooled[2]} errors); "
                    f"one worker {baseline[0]:6.2f} s; ratio {baseline[0] / pooled[0]:.1f}x"
                )

            start = time.perf_counter()
            result = run_module(
                "keyops.runbooks.x509_inventory",
                {
                    "paths": [str(folder / "certs")],
                    "endpoints": endpoints,
                    "ca_bundle": str(folder / "roots.pem"),
                    "pkcs12_passwords": [P12_PASSWORD],
                    "workers": args.workers,
                },
            )
            elapsed = time.perf_counter() - start
            assert not result.get("failed"), result.get("msg")
            print(
                f"  module     {elapsed:6.2f} s through ansible-playbook, scan itself "
                f"{result['summary']['seconds']:.2f} s ({result['summary']['certificates']} certificates, "
                f"{result['summary']['errors']} errors)"
            )
        finally:
            # SIGTERM shuts the 200 servers down one poll interval at a time; nothing to keep, so kill.
            server.kill()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
