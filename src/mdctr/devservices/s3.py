"""A local S3-compatible server for development and tests.

Two backends:

* ``s3rver`` (default): the npm package, pinned in ``scripts/s3rver/package-lock.json`` and installed by
  ``scripts/local-s3 install`` into ``.local/s3rver``. It stores objects on disk under ``root``, so data survives
  :meth:`S3Server.restart` — the production-like behaviour the DVC tests rely on.
* ``moto``: ``moto.server.ThreadedMotoServer`` in this process, in memory. The fallback where Node/npm are not
  available; data does not survive a restart.

:meth:`S3Server.env` gives the variables that point boto3, DVC and MLflow at the server at once
(``AWS_ENDPOINT_URL_S3`` plus credentials).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

log = logging.getLogger(__name__)

#: credentials s3rver accepts by default (any values work with moto)
ACCESS_KEY = "S3RVER"
SECRET_KEY = "S3RVER"
REGION = "us-east-1"

Backend = Literal["s3rver", "moto"]


class S3ServerError(RuntimeError):
    """The local S3 server could not be installed, started or reached."""


def project_root() -> Path:
    """The checkout root (holds ``scripts/local-s3``); ``$MDCTR_ROOT`` overrides for installed packages."""
    env = os.environ.get("MDCTR_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[3]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer (e.g. 403) means the server is up
    except OSError:
        return False


def _wait_until_up(
    url: str, timeout: float, proc: subprocess.Popen[bytes] | None, log_path: Path | None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers(url):
            return
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path and log_path.exists() else ""
            raise S3ServerError(
                f"s3rver exited with status {proc.returncode} before answering on {url}:\n{tail}"
            )
        time.sleep(0.05)
    raise S3ServerError(f"local S3 server did not answer on {url} within {timeout:.0f} s")


def s3rver_entry(root: Path | None = None) -> Path:
    """Path of the pinned s3rver's entry script, installing it first (``scripts/local-s3 install``)."""
    root = root or project_root()
    entry = root / ".local" / "s3rver" / "node_modules" / "s3rver" / "bin" / "s3rver.js"
    script = root / "scripts" / "local-s3"
    if shutil.which("node") is None:
        raise S3ServerError("node not found: install Node.js or use backend='moto'")
    if not script.exists() and not entry.exists():
        raise S3ServerError(f"{script} not found (set MDCTR_ROOT to the checkout) or use backend='moto'")
    if script.exists():
        # The script reinstalls only when the committed lock changed; it is cheap otherwise.
        res = subprocess.run([str(script), "install"], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise S3ServerError(f"installing s3rver failed: {res.stderr.strip()}; use backend='moto' instead")
    return entry


@dataclass
class S3Server:
    """A running local S3 server.

    Attributes:
        endpoint_url: ``http://127.0.0.1:<port>``.
        bucket: the bucket created at start.
        access_key, secret_key: credentials it accepts.
        pid: the server process id (this process's id for the in-process moto backend).
        root: data directory (s3rver keeps objects there across restarts).
        port: TCP port on 127.0.0.1; kept by :meth:`restart`.
        backend: ``"s3rver"`` or ``"moto"``.
    """

    endpoint_url: str
    bucket: str
    access_key: str
    secret_key: str
    pid: int
    root: Path
    port: int
    backend: Backend
    extra_buckets: tuple[str, ...] = ()
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _moto: Any = field(default=None, repr=False)

    # -- environment -------------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """Variables that point boto3, DVC (s3fs) and MLflow at this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self) -> Any:
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
        )

    @property
    def running(self) -> bool:
        return _answers(self.endpoint_url)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def _launch(self, timeout: float = 30.0) -> None:
        if self.backend == "moto":
            from moto.server import ThreadedMotoServer

            # werkzeug logs one line per request; keep test output readable.
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
            self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
            self._moto.start()
            self.pid = os.getpid()
            _wait_until_up(self.endpoint_url, timeout, None, None)
            client = self.client()
            for name in (self.bucket, *self.extra_buckets):
                client.create_bucket(Bucket=name)
            return
        entry = s3rver_entry()
        data_dir = self.root / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.root / "s3rver.log"
        args = ["node", str(entry), "-d", str(data_dir), "-a", "127.0.0.1", "-p", str(self.port), "--silent"]
        for name in (self.bucket, *self.extra_buckets):
            args += ["--configure-bucket", name]  # s3rver creates it (or keeps it) at start
        env = dict(os.environ)
        # Node 20 dropped an OpenSSL default that s3rver's signature code relies on.
        env["NODE_OPTIONS"] = ("--openssl-legacy-provider " + env.get("NODE_OPTIONS", "")).strip()
        with log_path.open("ab") as log_fh:
            self._proc = subprocess.Popen(
                args, stdout=log_fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.pid = self._proc.pid
        (self.root / "s3rver.pid").write_text(str(self.pid))
        try:
            _wait_until_up(self.endpoint_url, timeout, self._proc, log_path)
        except S3ServerError:
            self.stop()
            raise
        log.info("s3rver started (pid %d) at %s, data in %s", self.pid, self.endpoint_url, data_dir)

    def stop(self) -> None:
        """Stop the server (idempotent). s3rver's data directory is kept."""
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=10)
            self._proc = None
            (self.root / "s3rver.pid").unlink(missing_ok=True)
            log.info("s3rver stopped (was pid %d)", self.pid)

    def restart(self) -> None:
        """Stop and start again on the same port and data directory."""
        self.stop()
        self._launch()

    def __enter__(self) -> S3Server:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_s3(
    root: Path,
    port: int | None = None,
    bucket: str = "mdctr",
    *,
    backend: Backend = "s3rver",
    extra_buckets: tuple[str, ...] = (),
    timeout: float = 30.0,
) -> S3Server:
    """Start a local S3 server and return once it answers.

    Args:
        root: state directory (s3rver: objects under ``root/data``, log and PID file beside them).
        port: TCP port on 127.0.0.1; a free one when None.
        bucket: bucket created at start (DVC does not create buckets).
        backend: ``"s3rver"`` (disk-backed, default) or ``"moto"`` (in memory, the fallback).
        extra_buckets: further buckets to create.
        timeout: seconds to wait for the server to answer.
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    if _answers(f"http://127.0.0.1:{port}"):
        raise S3ServerError(f"port {port} on 127.0.0.1 is already in use by another server")
    server = S3Server(
        endpoint_url=f"http://127.0.0.1:{port}",
        bucket=bucket,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        pid=0,
        root=root,
        port=port,
        backend=backend,
        extra_buckets=tuple(extra_buckets),
    )
    server._launch(timeout=timeout)
    return server
