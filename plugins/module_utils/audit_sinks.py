# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: where audit events go, and how none is lost on the way.

Shared by the ``keyops.runbooks.audit`` callback (which writes) and the ``audit_sink_check`` action (which
checks before a change). Sinks:

- ``file``: the local JSON-lines log (0600, flushed and fsynced per event); it also holds the chain's head.
- ``syslog``: RFC 5424 over TCP (octet-counted frames, RFC 6587), optionally TLS.
- ``hec``: an HTTP event collector speaking Splunk's HEC JSON format, token in ``Authorization: Splunk``.
- ``s3``: one archive object per run in a bucket with Object Lock, written in compliance mode at the run's end.

Every sink but the local file spools: records it could not take wait, in order, in a 0600 JSON-lines file in
the spool folder and go first on its next delivery (next event, or next run).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.audit import GENESIS_HASH, chain_event, parse_record
from ansible_collections.keyops.runbooks.plugins.module_utils.canonical import canonical_json

SINK_NAMES = ("file", "syslog", "hec", "s3")
ANCHOR_SINKS = ("syslog", "hec", "file")
DEFAULT_DIR = "~/.keyops/audit"
SYSLOG_FACILITY_AUDIT = 13  # "log audit" (RFC 5424, table 1)
SYSLOG_NOTICE, SYSLOG_WARNING = 5, 4
APP_NAME = "keyops"


class SinkError(Exception):
    """A sink could not take records. The message names the sink and why, never a token or a payload."""

    def __init__(self, sink: str, reason: str) -> None:
        self.sink = sink
        self.reason = reason
        super().__init__(f"audit sink '{sink}' failed: {reason}")


@dataclass
class AuditSettings:
    """The options of the callback, resolved once (ansible.cfg, environment, extra vars)."""

    sinks: list[str] = field(default_factory=lambda: ["file"])
    path: str = f"{DEFAULT_DIR}/audit.jsonl"
    spool_dir: str = f"{DEFAULT_DIR}/spool"
    timeout: float = 2.0
    retry_interval: float = 30.0
    fail_closed: bool = False
    required_sinks: list[str] | None = None
    anchor: str | None = None
    anchor_path: str | None = None
    syslog_host: str = "127.0.0.1"
    syslog_port: int = 514
    syslog_tls: bool = False
    syslog_ca: str | None = None
    hec_url: str | None = None
    hec_token: str | None = None
    hec_index: str | None = None
    hec_ca: str | None = None
    validate_certs: bool = True
    s3_bucket: str | None = None
    s3_prefix: str = "keyops-audit"
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_retention_days: int = 365

    @classmethod
    def from_options(cls, get_option: Callable[[str], Any]) -> AuditSettings:
        values = {}
        for name in cls.__dataclass_fields__:
            value = get_option(name)
            if value is not None:
                values[name] = value
        settings = cls(**values)
        settings.sinks = [sink for sink in dict.fromkeys(settings.sinks) if sink]
        settings.path = os.path.expanduser(settings.path)
        settings.spool_dir = os.path.expanduser(settings.spool_dir)
        if settings.anchor_path:
            settings.anchor_path = os.path.expanduser(settings.anchor_path)
        return settings

    def problems(self) -> list[str]:
        """Settings that can never work, worded with the option that fixes them."""
        found = [
            f"unknown sink '{sink}' in sinks (choose from {', '.join(SINK_NAMES)})"
            for sink in self.sinks
            if sink not in SINK_NAMES
        ]
        if "hec" in self.sinks and not (self.hec_url and self.hec_token):
            found.append("sink 'hec' needs hec_url and hec_token (KEYOPS_AUDIT_HEC_URL, KEYOPS_AUDIT_HEC_TOKEN)")
        if "s3" in self.sinks and not self.s3_bucket:
            found.append("sink 's3' needs s3_bucket (KEYOPS_AUDIT_S3_BUCKET)")
        if self.anchor and self.anchor not in (*ANCHOR_SINKS, "none"):
            found.append(f"anchor '{self.anchor}' is not one of {', '.join(ANCHOR_SINKS)}, none")
        if self.anchor in ("syslog", "hec") and self.anchor not in self.sinks:
            found.append(f"anchor '{self.anchor}' is not among sinks; add it to sinks or choose another anchor")
        return found

    @property
    def anchor_sink(self) -> str | None:
        """Where run summaries go: a second place, so a cut log tail shows. Syslog first, then HEC, else a file."""
        if self.anchor == "none":
            return None
        if self.anchor:
            return self.anchor
        return next((name for name in ("syslog", "hec") if name in self.sinks), "file")

    @property
    def anchor_file(self) -> str:
        return self.anchor_path or f"{self.path}.anchors"

    @property
    def required(self) -> list[str]:
        return list(self.sinks) if self.required_sinks is None else [s for s in self.required_sinks if s]


# ---------------------------------------------------------------------------------------------------------------
# Files written carefully


def ensure_private_dir(path: str) -> None:
    # os.makedirs gives the folders it makes on the way the umask's mode, not 0700: with the spool made first,
    # the log's own folder would be world-writable under umask 000. Make every missing level 0700.
    missing = []
    folder = os.path.abspath(path)
    while not os.path.isdir(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o700)


def append_line(path: str, record: dict[str, Any]) -> None:
    """Append one JSON line, then flush and fsync: an event on disk survives a crash of the run."""
    ensure_private_dir(os.path.dirname(path) or ".")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, canonical_json(record) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private_atomic(path: str, data: bytes) -> None:
    directory = os.path.dirname(path) or "."
    ensure_private_dir(directory)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def last_record(path: str, window: int = 65536) -> dict[str, Any] | None:
    """The last readable record of a JSON-lines file, read from its tail only."""
    try:
        with open(path, "rb") as stream:
            stream.seek(0, os.SEEK_END)
            size = stream.tell()
            stream.seek(max(0, size - window))
            lines = stream.read().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        record = parse_record(line)
        if record is not None:
            return record
    return None


# ---------------------------------------------------------------------------------------------------------------
# Sinks


class Sink:
    name = "sink"
    spools = True

    def deliver(self, records: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def check(self) -> str:
        """Raise SinkError when the sink cannot take records now; return what was checked."""
        raise NotImplementedError


class FileSink(Sink):
    name = "file"
    spools = False

    def __init__(self, path: str, name: str = "file") -> None:
        self.path = path
        self.name = name

    def deliver(self, records: list[dict[str, Any]]) -> None:
        try:
            for record in records:
                append_line(self.path, record)
        except OSError as error:
            raise SinkError(self.name, f"cannot append to {self.path} ({error.strerror})") from error

    def check(self) -> str:
        directory = os.path.dirname(self.path) or "."
        try:
            ensure_private_dir(directory)
        except OSError as error:
            raise SinkError(self.name, f"cannot create {directory} ({error.strerror})") from error
        target = self.path if os.path.exists(self.path) else directory
        if not os.access(target, os.W_OK):
            raise SinkError(self.name, f"{target} is not writable")
        return self.path


class SyslogSink(Sink):
    name = "syslog"

    def __init__(
        self,
        host: str,
        port: int,
        tls: bool = False,
        ca: str | None = None,
        validate_certs: bool = True,
        timeout: float = 2.0,
        hostname: str | None = None,
    ) -> None:
        self.host, self.port, self.tls, self.timeout = host, int(port), tls, timeout
        self.hostname = (hostname or socket.gethostname() or "-").split(".")[0][:255]
        self.context: ssl.SSLContext | None = None
        if tls:
            self.context = ssl.create_default_context(cafile=ca)
            if not validate_certs:
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE

    @property
    def address(self) -> str:
        return f"{'tls' if self.tls else 'tcp'}://{self.host}:{self.port}"

    def frame(self, record: dict[str, Any]) -> bytes:
        """One RFC 5424 message in an octet-counted frame: ``<PRI>1 TS HOST APP PROCID MSGID - JSON``."""
        anchor = "last_hash" in record and "action" not in record
        severity = SYSLOG_WARNING if record.get("outcome") in ("failure", "refused") else SYSLOG_NOTICE
        stamp = record.get("ts") or datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        header = (
            f"<{SYSLOG_FACILITY_AUDIT * 8 + severity}>1 {stamp} {self.hostname} {APP_NAME} {os.getpid()} "
            f"{'anchor' if anchor else 'audit'} - "
        )
        message = header.encode("ascii", "replace") + canonical_json(record)
        return str(len(message)).encode("ascii") + b" " + message

    @contextlib.contextmanager
    def _connection(self) -> Iterator[socket.socket]:
        try:
            raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as error:
            raise SinkError(self.name, f"cannot connect to {self.address} ({error.strerror or error})") from error
        try:
            sock = self.context.wrap_socket(raw, server_hostname=self.host) if self.context else raw
        except (OSError, ssl.SSLError) as error:
            raw.close()
            raise SinkError(
                self.name,
                f"TLS handshake with {self.address} failed ({type(error).__name__}); set "
                "syslog_ca to the CA that signed the server's certificate",
            ) from error
        try:
            yield sock
        finally:
            sock.close()

    def deliver(self, records: list[dict[str, Any]]) -> None:
        with self._connection() as sock:
            try:
                sock.sendall(b"".join(self.frame(record) for record in records))
                self._drain(sock)
            except OSError as error:
                raise SinkError(self.name, f"sending to {self.address} failed ({error.strerror or error})") from error

    def _drain(self, sock: socket.socket) -> None:
        # Syslog over TCP has no acknowledgement. Half-closing and waiting for the server to close its side shows
        # that it read everything we sent; a server gone half-way makes this fail, and the records stay spooled.
        if isinstance(sock, ssl.SSLSocket):
            with contextlib.suppress(ssl.SSLError, OSError):
                sock.unwrap()
            return
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(4096):
            pass

    def check(self) -> str:
        with self._connection():
            return self.address


class HecSink(Sink):
    name = "hec"

    def __init__(
        self,
        url: str,
        token: str,
        index: str | None = None,
        ca: str | None = None,
        validate_certs: bool = True,
        timeout: float = 2.0,
        hostname: str | None = None,
    ) -> None:
        self.url, self.index, self.timeout = url, index, timeout
        self._token = token
        self.hostname = hostname or socket.gethostname()
        context = None
        if url.startswith("https"):
            context = ssl.create_default_context(cafile=ca)
            if not validate_certs:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))

    def envelope(self, record: dict[str, Any]) -> dict[str, Any]:
        anchor = "last_hash" in record and "action" not in record
        envelope: dict[str, Any] = {
            "time": _epoch(record.get("ts")),
            "host": self.hostname,
            "source": "keyops.runbooks",
            "sourcetype": "keyops:audit:anchor" if anchor else "keyops:audit",
            "event": record,
        }
        if self.index:
            envelope["index"] = self.index
        return envelope

    def _post(self, body: bytes) -> None:
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Authorization": f"Splunk {self._token}", "Content-Type": "application/json"},
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                reply = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            reason = {
                401: "the token was refused (401)",
                403: "the token was refused (403)",
                400: "the collector refused the data (400)",
            }.get(error.code, f"HTTP {error.code}")
            raise SinkError(self.name, f"{self.url}: {reason}") from error
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise SinkError(self.name, f"cannot reach {self.url} ({type(error).__name__})") from error
        if reply.get("code", 0) != 0:
            raise SinkError(self.name, f"{self.url} answered code {reply.get('code')}")

    def deliver(self, records: list[dict[str, Any]]) -> None:
        # HEC takes several events in one request, one JSON object after the other.
        self._post(b"".join(canonical_json(self.envelope(record)) for record in records))

    def check(self) -> str:
        # An empty event list is the cheapest authenticated request; a collector answers 400 "No data".
        request = urllib.request.Request(
            self.url, data=b"", method="POST", headers={"Authorization": f"Splunk {self._token}"}
        )
        try:
            with self._opener.open(request, timeout=self.timeout):
                pass
        except urllib.error.HTTPError as error:
            if error.code in (401, 403):
                raise SinkError(self.name, f"{self.url}: the token was refused ({error.code})") from error
        except (urllib.error.URLError, OSError) as error:
            raise SinkError(self.name, f"cannot reach {self.url} ({type(error).__name__})") from error
        return self.url


class S3ArchiveSink(Sink):
    """One object per run, retained in compliance mode: nobody, root included, can delete it before it expires."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str,
        retention_days: int,
        endpoint_url: str | None = None,
        region: str | None = None,
        timeout: float = 2.0,
    ) -> None:
        self.bucket, self.prefix, self.retention_days = bucket, prefix.strip("/"), int(retention_days)
        self.endpoint_url, self.region, self.timeout = endpoint_url, region, timeout
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError as error:
                raise SinkError(self.name, "the Python library boto3 is not installed on the controller") from error
            config = Config(
                connect_timeout=self.timeout, read_timeout=max(self.timeout, 10), retries={"max_attempts": 2}
            )
            self._client = boto3.client(
                "s3", endpoint_url=self.endpoint_url or None, region_name=self.region, config=config
            )
        return self._client

    def object_key(self, run_id: str, ts: str) -> str:
        return f"{self.prefix}/{ts[:4]}/{ts[5:7]}/{ts[8:10]}/{run_id}.jsonl"

    @contextlib.contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        try:
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError as error:
            raise SinkError(self.name, "the Python library botocore is not installed on the controller") from error
        try:
            yield
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "error")
            raise SinkError(self.name, f"{what} in bucket {self.bucket} failed ({code})") from error
        except BotoCoreError as error:
            raise SinkError(self.name, f"{what} in bucket {self.bucket} failed ({type(error).__name__})") from error

    def deliver(self, records: list[dict[str, Any]]) -> None:
        """Each record is an archive ``{key, body}``; the retention date is set when it is written."""
        for archive in records:
            body = archive["body"].encode("utf-8")
            retain_until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=self.retention_days)
            with self._calls(f"writing {archive['key']}"):
                self.client().put_object(
                    Bucket=self.bucket,
                    Key=archive["key"],
                    Body=body,
                    ContentType="application/x-ndjson",
                    ContentMD5=base64.b64encode(hashlib.md5(body).digest()).decode("ascii"),
                    ObjectLockMode="COMPLIANCE",
                    ObjectLockRetainUntilDate=retain_until,
                )

    def check(self) -> str:
        with self._calls("reading the Object Lock configuration"):
            config = self.client().get_object_lock_configuration(Bucket=self.bucket)
        if config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise SinkError(
                self.name,
                f"bucket {self.bucket} has no Object Lock; create it with Object Lock "
                "enabled (it cannot be turned on later for existing objects)",
            )
        return f"s3://{self.bucket}/{self.prefix}/"


def _epoch(ts: str | None) -> float:
    if not ts:
        return round(time.time(), 3)
    return round(datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp(), 3)


def build_sinks(settings: AuditSettings, hostname: str | None = None) -> dict[str, Sink]:
    sinks: dict[str, Sink] = {}
    for name in settings.sinks:
        if name == "file":
            sinks[name] = FileSink(settings.path)
        elif name == "syslog":
            sinks[name] = SyslogSink(
                settings.syslog_host,
                settings.syslog_port,
                settings.syslog_tls,
                settings.syslog_ca,
                settings.validate_certs,
                settings.timeout,
                hostname,
            )
        elif name == "hec" and settings.hec_url and settings.hec_token:
            sinks[name] = HecSink(
                settings.hec_url,
                settings.hec_token,
                settings.hec_index,
                settings.hec_ca,
                settings.validate_certs,
                settings.timeout,
                hostname,
            )
        elif name == "s3" and settings.s3_bucket:
            sinks[name] = S3ArchiveSink(
                settings.s3_bucket,
                settings.s3_prefix,
                settings.s3_retention_days,
                settings.s3_endpoint_url,
                settings.s3_region,
                settings.timeout,
            )
    return sinks


# ---------------------------------------------------------------------------------------------------------------
# Spool and the trail


class Spool:
    """Records a sink has not taken yet, oldest first, in a 0600 JSON-lines file."""

    def __init__(self, spool_dir: str, sink: str) -> None:
        self.path = os.path.join(spool_dir, f"{sink}.spool.jsonl")

    def load(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as stream:
                return [json.loads(line) for line in stream if line.strip()]
        except FileNotFoundError:
            return []

    def save(self, records: list[dict[str, Any]]) -> None:
        if records:
            write_private_atomic(self.path, b"".join(canonical_json(record) + b"\n" for record in records))
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


@dataclass
class Delivery:
    sink: str
    ok: bool
    reason: str = ""
    spooled: int = 0


class AuditTrail:
    """Chains events and hands them to every sink; a sink that is down gets them later, in order."""

    def __init__(
        self, settings: AuditSettings, hostname: str | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.sinks = build_sinks(settings, hostname)
        self._clock = clock
        self._retry_at: dict[str, float] = {}
        self.head_path = os.path.join(settings.spool_dir, "chain-head.json")
        self.lock_path = os.path.join(settings.spool_dir, "chain.lock")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Two runs on one controller share the chain: one writer at a time keeps it a single line.
        ensure_private_dir(self.settings.spool_dir)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def head(self) -> str:
        """The hash the next event links to: the last one written, whichever run wrote it."""
        try:
            with open(self.head_path, encoding="utf-8") as stream:
                return str(json.load(stream)["hash"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            pass
        if "file" in self.sinks:
            record = last_record(self.settings.path)
            if record and isinstance(record.get("hash"), str):
                return record["hash"]
        return GENESIS_HASH

    def append(self, event: dict[str, Any]) -> tuple[dict[str, Any], list[Delivery]]:
        """Chain one event to the head and deliver it everywhere; returns the chained event and each outcome."""
        with self._locked():
            chained = chain_event(event, self.head())
            deliveries = []
            if "file" in self.sinks:
                deliveries.append(self._deliver(self.sinks["file"], [chained]))
            write_private_atomic(self.head_path, canonical_json({"hash": chained["hash"]}))
        deliveries += [
            self._deliver(sink, [chained]) for name, sink in self.sinks.items() if name not in ("file", "s3")
        ]
        return chained, deliveries

    def deliver_to(self, name: str, records: list[dict[str, Any]]) -> Delivery:
        # "file" here is the second file for anchors, never the log the anchors vouch for.
        sink = FileSink(self.settings.anchor_file, "anchor_file") if name == "file" else self.sinks.get(name)
        if sink is None:
            return Delivery(name, False, f"sink '{name}' is not configured")
        return self._deliver(sink, records, force=True)

    def flush(self) -> list[Delivery]:
        """Send whatever is spooled now (the end of a run tries once more, whatever the retry interval)."""
        return [self._deliver(sink, [], force=True) for sink in self.sinks.values() if sink.spools]

    def _deliver(self, sink: Sink, records: list[dict[str, Any]], force: bool = False) -> Delivery:
        if not sink.spools:
            try:
                sink.deliver(records)
            except SinkError as error:
                return Delivery(sink.name, False, error.reason)
            return Delivery(sink.name, True)

        spool = Spool(self.settings.spool_dir, sink.name)
        pending = spool.load() + records
        if not pending:
            return Delivery(sink.name, True)
        if not force and self._clock() < self._retry_at.get(sink.name, 0.0):
            spool.save(pending)
            return Delivery(sink.name, False, "down at the last attempt; waiting for the retry interval", len(pending))
        try:
            sink.deliver(pending)
        except SinkError as error:
            spool.save(pending)
            self._retry_at[sink.name] = self._clock() + self.settings.retry_interval
            return Delivery(sink.name, False, error.reason, len(pending))
        spool.save([])
        self._retry_at.pop(sink.name, None)
        return Delivery(sink.name, True)

    def check(self) -> list[Delivery]:
        """Is every configured sink able to take records now? Spooled records are reported, not sent."""
        results = []
        spool_dir = self.settings.spool_dir
        try:
            ensure_private_dir(spool_dir)
            if not os.access(spool_dir, os.W_OK):
                raise PermissionError(13, "Permission denied")
        except OSError as error:
            results.append(Delivery("spool", False, f"{spool_dir} is not writable ({error.strerror})"))
        else:
            results.append(Delivery("spool", True, spool_dir))
        for name, sink in self.sinks.items():
            spooled = len(Spool(self.settings.spool_dir, name).load()) if sink.spools else 0
            try:
                detail = sink.check()
            except SinkError as error:
                results.append(Delivery(name, False, error.reason, spooled))
            else:
                results.append(Delivery(name, True, detail, spooled))
        return results
