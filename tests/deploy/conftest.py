"""A stand-in for the Kubernetes API server's ``trainjobs`` resource, spoken over real HTTP.

:class:`KubeAPI` serves ``trainer.kubeflow.org/v1alpha1`` TrainJobs the way the API server does for the
Kubeflow Trainer CRD: ``POST`` validates the object against the TrainJob schema (the ``kubeflow-trainer-api``
models) and creates it (409 if the name exists), ``GET`` reads one or lists them, ``?watch=true`` streams
``ADDED``/``MODIFIED``/``DELETED`` events as JSON lines, ``DELETE`` removes one. What the controller would do
with a new job is the test's ``runner``: :func:`run_pods` runs the job's own command and arguments as
``numNodes`` local processes with the ``PET_*`` variables the ``torch-distributed`` runtime sets, and ends the
job ``Complete`` or ``Failed`` from their exit codes; a scripted runner just sets conditions.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

PREFIX = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/"

Runner = Callable[["KubeAPI", dict[str, Any]], None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that hangs up on a kept-alive connection or a stopped watch is not an error
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class KubeAPI:
    """The fake API server: ``objects[(namespace, name)]``, every request in ``requests``, every created body in
    ``created``; ``runner(api, obj)`` runs in a thread for each created job."""

    def __init__(self, runner: Runner | None = None) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.created: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.events: list[tuple[int, str, dict[str, Any]]] = []  # (resourceVersion, type, object)
        self.runner = runner
        self.pods: list[dict[str, Any]] = []  # what run_pods ran: node rank, exit code, stderr tail
        self._rv = 0
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    # --- state changes (the controller's side) ---
    def _record(self, kind: str, obj: dict[str, Any]) -> None:
        with self._cond:
            self._rv += 1
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self.events.append((self._rv, kind, json.loads(json.dumps(obj))))
            self._cond.notify_all()

    def set_condition(
        self, namespace: str, name: str, type_: str, reason: str = "", message: str = ""
    ) -> None:
        with self._cond:
            obj = self.objects[(namespace, name)]
            conds = obj.setdefault("status", {}).setdefault("conditions", [])
            conds.append({"type": type_, "status": "True", "reason": reason, "message": message})
            self._record("MODIFIED", obj)

    def put(self, namespace: str, obj: dict[str, Any]) -> None:
        """Store ``obj`` as if created earlier (no runner)."""
        obj = json.loads(json.dumps(obj))
        obj["metadata"]["namespace"] = namespace
        with self._cond:
            self.objects[(namespace, obj["metadata"]["name"])] = obj
            self._record("ADDED", obj)

    def run_jobs_locally(self) -> None:
        """From now on every created job runs as local processes (:func:`run_pods`)."""
        self.runner = run_pods

    def join(self, timeout: float = 300) -> None:
        for t in self._threads:
            t.join(timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- HTTP ---
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # chunked watch streams, like the API server's

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._send(
                    code,
                    {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                     "message": message, "code": code},
                )  # fmt: skip

            def _route(self) -> tuple[str, str | None, dict[str, list[str]]] | None:
                url = urlparse(self.path)
                api.requests.append((self.command, url.path + ("?" + url.query if url.query else "")))
                if not url.path.startswith(PREFIX):
                    self._status(404, "NotFound", f"no route {url.path}")
                    return None
                parts = url.path[len(PREFIX) :].split("/")
                if len(parts) < 2 or parts[1] != "trainjobs":
                    self._status(404, "NotFound", f"no route {url.path}")
                    return None
                return parts[0], (parts[2] if len(parts) > 2 else None), parse_qs(url.query)

            def do_POST(self) -> None:
                from kubeflow_trainer_api import models

                route = self._route()
                if route is None:
                    return
                ns, _, _ = route
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                try:
                    models.TrainerV1alpha1TrainJob.from_dict(body)
                except Exception as e:  # the API server answers 422 to any schema violation
                    self._status(422, "Invalid", f"TrainJob is invalid: {e}")
                    return
                name = body["metadata"]["name"]
                with api._cond:
                    if (ns, name) in api.objects:
                        self._status(
                            409, "AlreadyExists", f'trainjobs.trainer.kubeflow.org "{name}" already exists'
                        )
                        return
                    body["metadata"].update(
                        namespace=ns, uid=f"uid-{len(api.created)}",
                        creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    )  # fmt: skip
                    body["status"] = {}
                    api.objects[(ns, name)] = body
                    api.created.append(json.loads(json.dumps(body)))
                    api._record("ADDED", body)
                self._send(201, body)
                if api.runner is not None:
                    t = threading.Thread(target=api.runner, args=(api, body), daemon=True)
                    api._threads.append(t)
                    t.start()

            def do_DELETE(self) -> None:
                route = self._route()
                if route is None:
                    return
                ns, name, _ = route
                with api._cond:
                    obj = api.objects.pop((ns, name or ""), None)
                    if obj is None:
                        self._status(404, "NotFound", f'trainjobs "{name}" not found')
                        return
                    api._record("DELETED", obj)
                self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

            def do_GET(self) -> None:
                route = self._route()
                if route is None:
                    return
                ns, name, query = route
                if name:
                    obj = api.objects.get((ns, name))
                    if obj is None:
                        self._status(404, "NotFound", f'trainjobs.trainer.kubeflow.org "{name}" not found')
                    else:
                        self._send(200, obj)
                    return
                selector = query.get("fieldSelector", [""])[0]
                only = selector.split("=", 1)[1] if selector.startswith("metadata.name=") else None
                if query.get("watch", ["false"])[0].lower() != "true":
                    items = [
                        o
                        for (n, _), o in api.objects.items()
                        if n == ns and only in (None, o["metadata"]["name"])
                    ]
                    self._send(200, {"kind": "TrainJobList", "apiVersion": "trainer.kubeflow.org/v1alpha1",
                                     "metadata": {"resourceVersion": str(api._rv)}, "items": items})  # fmt: skip
                    return
                self._watch(ns, only, int(query.get("resourceVersion", ["0"])[0] or 0),
                            float(query.get("timeoutSeconds", ["30"])[0]))  # fmt: skip

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _watch(self, ns: str, only: str | None, since: int, timeout: float) -> None:
                # one JSON event per line in a chunked body, flushed as it happens; the stream ends at the
                # timeout or after the watched job ended (a real server keeps it open: the client re-reads)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    self._events(ns, only, since, timeout)
                    self._chunk(b"")
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _events(self, ns: str, only: str | None, since: int, timeout: float) -> None:
                deadline = time.monotonic() + timeout
                while True:
                    with api._cond:
                        pending = [
                            (rv, kind, obj)
                            for rv, kind, obj in api.events
                            if rv > since
                            and obj["metadata"].get("namespace") == ns
                            and only in (None, obj["metadata"]["name"])
                        ]
                        if not pending:
                            left = deadline - time.monotonic()
                            if left <= 0:
                                return
                            api._cond.wait(min(left, 0.5))
                            continue
                    for rv, kind, obj in pending:
                        self._chunk((json.dumps({"type": kind, "object": obj}) + "\n").encode())
                        since = rv
                        ended = any(c.get("type") in ("Complete", "Failed") for c in
                                    (obj.get("status") or {}).get("conditions", []))  # fmt: skip
                        if only is not None and (kind == "DELETED" or ended):
                            return

        return Handler

    def kubeconfig(self, path: Path, namespace: str) -> Path:
        """A kubeconfig whose current context is this server and ``namespace`` (what ``kubectl`` would use)."""
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "not-checked"}}],
            "contexts": [
                {"name": "fake", "context": {"cluster": "fake", "user": "tester", "namespace": namespace}}
            ],
            "current-context": "fake",
        }
        path.write_text(json.dumps(cfg))
        return path


def run_pods(api: KubeAPI, obj: dict[str, Any]) -> None:
    """The controller and the ``torch-distributed`` runtime, on this machine: one process per node running the
    job's ``command`` + ``args`` with its plain ``env`` values and the ``PET_*`` rendezvous variables (Secret
    references cannot be resolved here: the processes inherit the test's environment instead)."""
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    trainer = obj["spec"]["trainer"]
    nodes, port = int(trainer.get("numNodes", 1)), _free_port()
    env = {**os.environ, **{e["name"]: e["value"] for e in trainer.get("env", []) if "value" in e}}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # torchrun of this venv
    env.update(OMP_NUM_THREADS="1", PET_NNODES=str(nodes), PET_MASTER_ADDR="127.0.0.1", PET_MASTER_PORT=str(port),
               PET_NPROC_PER_NODE=str(trainer.get("numProcPerNode", 1)))  # fmt: skip
    procs = [
        subprocess.Popen(
            [*trainer["command"], *trainer.get("args", [])],
            env={**env, "PET_NODE_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(nodes)
    ]
    failed = []
    for rank, p in enumerate(procs):
        out, _ = p.communicate(timeout=600)
        tail = "\n".join(out.strip().splitlines()[-15:])
        api.pods.append({"node": rank, "returncode": p.returncode, "log": out, "tail": tail})
        if p.returncode != 0:
            failed.append(
                f"node-{rank} exited with code {p.returncode}: {tail.splitlines()[-1] if tail else ''}"
            )
    if failed:
        api.set_condition(ns, name, "Failed", "FailedJobs", "; ".join(failed))
    else:
        api.set_condition(ns, name, "Complete", "JobsCompleted", "jobset completed successfully")


@pytest.fixture
def kube_api() -> Iterator[KubeAPI]:
    api = KubeAPI()
    try:
        yield api
    finally:
        api.join(5)
        api.close()
