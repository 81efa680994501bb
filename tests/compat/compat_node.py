"""Start and stop `warren server` processes for the compatibility harness.

Standard library only: the harness imports it with Warren's interpreter, and the pytest
plugin (``warren_docker``) imports it inside the client suites' virtualenv, where Warren
itself is not installed. The node always runs under Warren's interpreter
(``WARREN_COMPAT_PYTHON``, default the interpreter the virtualenv was made from) from the repository root.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STARTUP = re.compile(r"AMQP on [^:\s]+:(\d+)")
STARTUP_TLS = re.compile(r"AMQPS on [^:\s]+:(\d+)")


@dataclass
class TLSFiles:
    cert: str
    key: str
    ca: str | None = None


@dataclass
class WarrenProcess:
    """One `warren server` process; restartable on the same ports and data directory."""

    data_dir: str
    tls: TLSFiles | None = None
    amqp_port: int = 0
    tls_port: int | None = None
    proc: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    owns_data_dir: bool = False

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    def start(self, timeout: float = 60) -> WarrenProcess:
        # inside the suites' virtualenv, the interpreter it was made from has Warren installed
        python = os.environ.get("WARREN_COMPAT_PYTHON") or getattr(sys, "_base_executable", sys.executable)
        cmd = [python, "-m", "warren.cli", "server", "--data-dir", self.data_dir,
               "--amqp-port", str(self.amqp_port), "--http-port", "0", "--prometheus-port", "-1"]
        if self.tls is not None:
            cmd += ["--tls-port", str(self.tls_port or 0), "--tls-cert", self.tls.cert,
                    "--tls-key", self.tls.key]
            if self.tls.ca:
                cmd += ["--tls-ca", self.tls.ca]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        deadline = time.monotonic() + timeout
        while True:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, text=True,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            self.output = []
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                match = STARTUP.search(line)
                if match:
                    self.amqp_port = int(match.group(1))
                    tls = STARTUP_TLS.search(line)
                    if tls:
                        self.tls_port = int(tls.group(1))
                    # keep draining the output so the node never blocks on a full pipe
                    threading.Thread(target=self._drain, daemon=True).start()
                    return self
            self.proc.wait()
            # a restart on a fixed port may race the old socket's release: retry briefly
            if time.monotonic() > deadline or not any("address already in use" in line.lower()
                                                      for line in self.output):
                raise RuntimeError("warren server did not start:\n" + "".join(self.output))
            time.sleep(0.2)

    def _drain(self) -> None:
        proc = self.proc
        if proc is None or proc.stdout is None:
            return
        for line in proc.stdout:
            self.output.append(line)
            del self.output[:-200]

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def remove(self) -> None:
        self.kill()
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def start_warren(tls: TLSFiles | None = None, data_dir: str | None = None) -> WarrenProcess:
    owns = data_dir is None
    if data_dir is None:
        data_dir = tempfile.mkdtemp(prefix="warren-compat-")
    return WarrenProcess(data_dir=data_dir, tls=tls, owns_data_dir=owns).start()
