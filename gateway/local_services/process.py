"""What every local service shares: loopback ports, finding the program, one child process's lifecycle.

:class:`Service` runs one program as a child in its own session: it writes the
service's config, starts it on free loopback ports (retrying when another process
takes a port between the probe and the bind), waits until it answers, and stops it
(SIGTERM, then the whole process group). Each service module says what differs:
its command line and how to ask whether it is up.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
STOP_TIMEOUT_S = 5.0
# A fresh port can be taken by someone else between our probe and the service's bind.
PORT_ATTEMPTS = 3
LOG_TAIL_LINES = 20


class ServiceError(RuntimeError):
    """A local service could not be started, stopped or asked something."""


@dataclass
class ServiceInfo:
    """Where a running local service can be reached and where its files are."""

    name: str
    port: int
    pid: int
    data_dir: Path
    log_path: Path
    url: str


def free_port() -> int:
    """Ask the kernel for a currently free TCP port on the loopback address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """Pick ``count`` distinct free ports (sockets held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def http_request(
    method: str,
    url: str,
    *,
    data: bytes | None = None,
    timeout_s: float = 5.0,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    """One HTTP exchange; returns (status, body) for any answered status, raises OSError if none."""
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_answers(url: str, expected: int) -> bool:
    """True if a GET of ``url`` answers with status ``expected`` within a second."""
    try:
        return http_request("GET", url, timeout_s=1.0)[0] == expected
    except OSError:
        return False


def find_binary(name: str, override: str | None) -> str | None:
    """The program to run: ``override`` (a name or path) if given, else ``name`` on PATH or in the sbin folders."""
    if override:
        return shutil.which(override)
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


class Service:
    """One child process: config, start with port retry, readiness wait, stop."""

    name = ""
    binary = ""
    apt_package = ""
    env_var = ""
    port_count = 1
    stop_timeout_s = STOP_TIMEOUT_S

    def __init__(self, root: Path, binary_override: str | None):
        self.dir = root / self.name
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / f"{self.name}.log"
        if binary_override:
            self.binary_override, self.override_from = binary_override, f"binaries[{self.name!r}]"
        else:
            self.binary_override, self.override_from = os.environ.get(self.env_var) or None, self.env_var
        self.ports: list[int] = []
        self.process: subprocess.Popen | None = None

    # What differs per service.
    def command(self, binary: str) -> list[str]:
        raise NotImplementedError

    def answers(self) -> bool:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports[0]}"

    # The shared lifecycle.
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def info(self) -> ServiceInfo:
        pid = self.process.pid if self.running else -1
        return ServiceInfo(
            self.name,
            self.ports[0] if self.ports else 0,
            pid,
            self.data_dir,
            self.log_path,
            self.url if self.ports else "",
        )

    def start(self, timeout_s: float) -> None:
        if self.running:
            return
        binary = find_binary(self.binary, self.binary_override)
        if binary is None:
            wanted = self.binary_override or self.binary
            raise ServiceError(
                f"{self.name}: program {wanted!r} not found; install it with "
                f"'apt-get install {self.apt_package}'"
                + (f", or fix {self.override_from}" if self.binary_override else "")
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        keep_ports = bool(self.ports)  # a restart keeps its port so clients can reconnect
        for attempt in range(1 if keep_ports else PORT_ATTEMPTS):
            if not keep_ports:
                self.ports = free_ports(self.port_count)
            failure = self._launch(binary, timeout_s)
            if failure is None:
                return
            port_taken = "address already in use" in failure.lower()
            if not port_taken or keep_ports or attempt == PORT_ATTEMPTS - 1:
                where = f"{LOOPBACK}:{','.join(map(str, self.ports))}"
                raise ServiceError(f"{self.name} ({where}) {failure}")

    def _launch(self, binary: str, timeout_s: float) -> str | None:
        """Start once and wait until it answers; None on success, else why it failed."""
        argv = self.command(binary)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            # Own session: Ctrl-C in a terminal reaches us, not the service, so we stop it in
            # order; and the whole group can be killed if it does not stop.
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.dir, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return (
                    f"exited with code {self.process.returncode} during startup; "
                    f"last lines of {self.log_path}:\n{self._log_tail(log_offset)}"
                )
            if self.answers() and self.process.poll() is None:
                return None
            time.sleep(0.05)
        self.stop()
        return f"did not answer within {timeout_s:.0f} s; last lines of {self.log_path}:\n{self._log_tail(log_offset)}"

    def _log_tail(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                text = log.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"
        return "\n".join(text.splitlines()[-LOG_TAIL_LINES:]) or "(log is empty)"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            # A wrapper script or a hung service: end it and anything it started.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=self.stop_timeout_s)
