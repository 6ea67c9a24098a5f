"""The local endpoint's lifecycle: atomic deploy, identity check, stop that finds every server.

A deployment lives in WORK_DIR/endpoint/:

    deployed.json   the deployment record, written last (atomically) and only once the server it
                    names has answered GET /info with its own PID, instance id and model version
    server.log      every server's log (appended)
    .lock           serialises deploy/stop of one work dir across processes

Deploying version N (`deploy`):
1. start a new server process (its own session, so it outlives the run like an endpoint) on a
   free port chosen by the server itself (no probe-then-bind race) or on `--port`;
2. wait until it writes its URL, then ask `GET /info` there: the answer must carry the child's
   PID, the instance id given to it and model version N. Anything else (the child exited with
   `Address already in use`, another program or another work dir's server answers) fails the
   deploy with a one-line reason, kills the child and leaves the previous deployment serving;
3. write deployed.json (tmp file + rename: a reader sees the old or the new record, never half);
4. stop the previous server and any other server of this work dir (left by an interrupted run).

An interrupt (Ctrl-C, SIGTERM turned into an exception by the runner) before step 3 kills the new
child and leaves the previous deployment serving and recorded; steps 3 and 4 run with the signals
held (pipeline.local.signals.deferred_signals), so an interrupt there takes effect once the new
server is recorded and the old one stopped. A server left by a killed (SIGKILL) run is still found
by `stop` and by the next deploy, which look for servers by the owner tag on their command line
(`--owner WORK_DIR/endpoint`), not only by the record.
Redeploying with an explicit `--port` that the current deployment holds hot-swaps the model in that
server (POST /admin/reload) and checks /info for the new version before recording it.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from features import spec
from pipeline.local.signals import deferred_signals

ENDPOINT_DIRNAME = "endpoint"
DEPLOYED_FILE = "deployed.json"
SERVER_LOG = "server.log"
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 35.0  # the server drains for up to 30 s on SIGTERM
REPO_ROOT = Path(__file__).resolve().parents[2]


class DeployError(RuntimeError):
    """A deployment that did not happen, with a one-line reason; the previous one keeps serving."""


def endpoint_dir(work_dir: str | Path) -> Path:
    return Path(work_dir) / ENDPOINT_DIRNAME


def owner_tag(work_dir: str | Path) -> str:
    """What every server of this work dir carries as `--owner` (absolute, so any cwd finds it)."""
    return str(endpoint_dir(work_dir).resolve())


def read_deployment(work_dir: str | Path) -> dict[str, Any] | None:
    """The deployment record, or None (also for an unreadable one: the next deploy replaces it)."""
    path = endpoint_dir(work_dir) / DEPLOYED_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_record(work_dir: Path, record: dict[str, Any]) -> None:
    path = endpoint_dir(work_dir) / DEPLOYED_FILE
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tmp.open("w") as fh:
        json.dump(record, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(work_dir: Path) -> Iterator[None]:
    d = endpoint_dir(work_dir)
    d.mkdir(parents=True, exist_ok=True)
    with (d / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def server_info(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """GET /info of a local endpoint server, or None when nothing (or something else) answers."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", "/info")
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            return None
        info = json.loads(body)
        return info if isinstance(info, dict) else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def is_live(record: dict[str, Any] | None) -> bool:
    """True when the record's URL is answered by the very server it names (PID + instance id)."""
    if not record or not record.get("url") or record.get("stopped_at"):
        return False
    info = server_info(record["url"])
    return bool(
        info
        and info.get("pid") == record.get("pid")
        and info.get("instance_id") == record.get("instance_id")
        and str(info.get("model_version")) == str(record.get("version"))
    )


def servers(work_dir: str | Path) -> list[psutil.Process]:
    """Every running endpoint server of this work dir, found by its `--owner` tag (not the record),
    plus the record's PID when it runs `training.serve` (records written before the tag existed)."""
    tag = owner_tag(work_dir)
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = proc.info.get("cmdline") or []
        if proc.info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        if "training.serve" in cmd and "--owner" in cmd:
            i = cmd.index("--owner")
            if i + 1 < len(cmd) and cmd[i + 1] == tag:
                found[proc.pid] = proc
    record = read_deployment(work_dir) or {}
    pid = record.get("pid")
    if isinstance(pid, int) and pid not in found and pid != os.getpid():
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if "training.serve" in proc.cmdline() and not _gone(proc):
                found[pid] = proc
    return list(found.values())


def _gone(proc: psutil.Process) -> bool:
    """Exited (a zombie counts: it serves nothing; reaped here when it is our child)."""
    try:
        if proc.status() != psutil.STATUS_ZOMBIE:
            return False
    except psutil.NoSuchProcess:
        return True
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(proc.pid, os.WNOHANG)
    return True


def _terminate(procs: list[psutil.Process], timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM (the server drains in-flight requests), then SIGKILL whatever is left."""
    for sig, wait in ((None, timeout), ("kill", 5.0)):
        alive = [p for p in procs if not _gone(p)]
        if not alive:
            return
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill() if sig == "kill" else proc.terminate()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not all(_gone(p) for p in alive):
            time.sleep(0.05)


def stop(work_dir: str | Path) -> int:
    """Stop every server of the work dir; the record is kept, marked stopped. Returns how many ran."""
    work_dir = Path(work_dir)
    with _locked(work_dir):
        procs = servers(work_dir)
        _terminate(procs)
        record = read_deployment(work_dir)
        if record and not record.get("stopped_at"):
            record["stopped_at"] = _now()
            _write_record(work_dir, record)
    return len(procs)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _log_tail(path: Path, offset: int, lines: int = 3) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    tail = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
    return " | ".join(tail)


def _wait_for_url(
    process: subprocess.Popen[bytes], ready: Path, log: Path, offset: int, port: int, timeout: float
) -> str:
    deadline = time.monotonic() + timeout
    while True:
        if ready.exists():
            url = ready.read_text().strip()
            if url:
                return url
        code = process.poll()
        if code is not None:
            tail = _log_tail(log, offset)
            where = f"port {port}" if port else "a free port"
            if "Address already in use" in tail:
                raise DeployError(
                    f"port {port} is already in use by another process: choose another --port or stop "
                    f"what holds it (the previous deployment keeps serving; log {log})"
                )
            raise DeployError(f"endpoint server exited with code {code} before listening on {where}: {tail}")
        if time.monotonic() >= deadline:
            raise DeployError(f"endpoint server not listening after {timeout:.0f} s (see {log})")
        time.sleep(0.05)


def _check_identity(url: str, pid: int, instance_id: str, version: int, timeout: float) -> dict[str, Any]:
    """The server at `url` must be the one just started: its PID, instance id and model version."""
    deadline = time.monotonic() + timeout
    while True:
        info = server_info(url)
        if info is not None:
            if info.get("pid") != pid or info.get("instance_id") != instance_id:
                raise DeployError(
                    f"{url} is answered by another server (pid {info.get('pid')}, model "
                    f"{info.get('model')}), not the one just started (pid {pid})"
                )
            if str(info.get("model_version")) != str(version):
                raise DeployError(
                    f"{url} serves model version {info.get('model_version')}, expected {version}"
                )
            return info
        if time.monotonic() >= deadline:
            raise DeployError(f"{url} did not answer GET /info within {timeout:.0f} s")
        time.sleep(0.05)


def _hot_swap(
    work_dir: Path, previous: dict[str, Any], model_data: Path, version: int, timeout: float
) -> dict[str, Any]:
    """Same port, same server: reload the model in place, check /info, then record."""
    url = previous["url"]
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        body = json.dumps({"model": str(model_data), "model_version": str(version)})
        conn.request("POST", "/admin/reload", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        message = resp.read().decode("utf-8", "replace").strip()
    except OSError as exc:
        raise DeployError(f"cannot reload the model at {url}: {exc}") from None
    finally:
        conn.close()
    if resp.status != 200:
        raise DeployError(f"model version {version} not loaded at {url}: {message}")
    info = _check_identity(url, previous["pid"], previous["instance_id"], version, timeout)
    record = {**previous, "model_data": info["model"], "version": version, "deployed_at": _now()}
    _write_record(work_dir, record)
    return record


def deploy(
    work_dir: str | Path,
    model_data: str | Path,
    version: int,
    port: int = 0,
    *,
    timeout: float = READY_TIMEOUT_SECONDS,
    endpoint_name: str = spec.ENDPOINT_NAME,
) -> dict[str, Any]:
    """Deploy `model_data` as `version` (see the module doc); returns the new deployment record."""
    work_dir = Path(work_dir)
    model_data = Path(model_data).resolve()
    edir = endpoint_dir(work_dir)
    with _locked(work_dir):
        previous = read_deployment(work_dir)
        if port and previous and previous.get("port") == port and is_live(previous):
            with deferred_signals():  # reload and record together: never one without the other
                return _hot_swap(work_dir, previous, model_data, version, timeout)
        instance_id = uuid.uuid4().hex
        ready = edir / f".ready-{instance_id}"
        log = edir / SERVER_LOG
        offset = log.stat().st_size if log.exists() else 0
        cmd = [
            sys.executable, "-m", "training.serve",
            "--model", str(model_data),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--ready-file", str(ready),
            "--model-version", str(version),
            "--instance-id", instance_id,
            "--owner", owner_tag(work_dir),
        ]  # fmt: skip
        process: subprocess.Popen[bytes] | None = None
        switched = False
        try:
            # The child keeps its own descriptor. Ctrl-C/SIGTERM are held while it starts and
            # delivered once `process` names it, so the cleanup below stops it: a signal arriving
            # between the child's exec and Popen's return would otherwise leave it serving, unowned.
            with deferred_signals(), log.open("ab") as fh:
                process = subprocess.Popen(
                    cmd,
                    cwd=REPO_ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # outlives this run; Ctrl-C in the terminal does not reach it
                )
            url = _wait_for_url(process, ready, log, offset, port, timeout)
            _check_identity(url, process.pid, instance_id, version, timeout)
            record = {
                "endpoint_name": endpoint_name,
                "model_data": str(model_data),
                "version": version,
                "url": url,
                "port": urllib.parse.urlsplit(url).port,
                "pid": process.pid,
                "instance_id": instance_id,
                "owner": owner_tag(work_dir),
                "deployed_at": _now(),
            }
            with deferred_signals():  # switch, then stop the old server(s): never cut in between
                _write_record(work_dir, record)
                switched = True
                _terminate([p for p in servers(work_dir) if p.pid != process.pid])
        except BaseException:
            if not switched and process is not None and process.poll() is None:
                _terminate([psutil.Process(process.pid)], timeout=5)
            raise
        finally:
            ready.unlink(missing_ok=True)
            if process is not None and process.poll() is not None:
                process.wait()
    return record


def status(work_dir: str | Path) -> dict[str, Any]:
    """The record plus what is actually running (`running`: the record's server answers as itself)."""
    record = read_deployment(work_dir) or {}
    others = [p.pid for p in servers(work_dir) if p.pid != record.get("pid")]
    return {**record, "running": is_live(record), "other_servers": others}
