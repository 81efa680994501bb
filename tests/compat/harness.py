"""Run client libraries' own test suites against Warren (and RabbitMQ) and print a table.

    scripts/compat                          # every suite against a fresh Warren node per suite
    scripts/compat --broker both            # ... and against this machine's rabbitmq-server
    scripts/compat --suites py-amqp,kombu   # a subset
    scripts/compat --prepare                # download the sdists, build the venv (scripts/install)

The Python suites come from their PyPI sdists (pinned below), cached with a virtualenv in
``.cache/compat``; the Go suite is Debian's golang-github-rabbitmq-amqp091-go-dev, copied
from /usr/share/gocode and built offline (GO111MODULE=off). Suites that start RabbitMQ in
Docker (aiormq, aio-pika) get Warren nodes from the ``warren_docker`` pytest plugin. No
reruns: pytest-rerunfailures is disabled, so a flaky pass is not counted.
Standard library only; see docs/compat.md for the numbers and every difference explained.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = REPO / ".cache" / "compat"
VENV = CACHE / "venv"
VENV_PYTHON = VENV / "bin" / "python"
GO_SRC = Path("/usr/share/gocode/src/github.com/rabbitmq/amqp091-go")

if __package__:
    from .compat_node import start_warren
else:  # run as a script: tests/compat is sys.path[0]
    from compat_node import start_warren

# Releases whose sdists ship their integration tests (amqp 5.4.2: t/integration without
# t/certs; kombu 5.7.0: t/integration; aiormq and aio-pika: tests/ with tests/certs for aiormq).
SDISTS = {"amqp": "5.4.2", "kombu": "5.7.0", "aiormq": "7.2.4", "aio-pika": "10.2.1"}
TEST_REQUIREMENTS = ["pytest>=8,<10", "pytest-timeout", "pytest-rerunfailures",
                     "aiomisc-pytest>=2,<3", "shortuuid", "yarl"]
RABBITMQ_PORT = 5675
RABBITMQ_NODE = "compat@localhost"


@dataclass
class Suite:
    name: str
    version: str
    kind: str  # "pytest" or "go"
    directory: str = ""  # the sdist's directory under CACHE/src
    args: list[str] = field(default_factory=list)
    docker: bool = False  # needs the warren_docker plugin
    fast: bool = False  # part of the normal test run (tests/compat/test_suites.py)
    timeout: int = 1800
    warren_only: bool = False  # needs what this machine's RabbitMQ lacks (a TLS listener)
    note: str = ""


# aiormq tests whose outcome depends on client-side task timing: measured failing at random
# against RabbitMQ 3.10.8 and Warren alike (docs/compat.md)
AIORMQ_TIMING = ("test_closing_waiter_cancellation", "test_connection_close_during_publish_drain")

# Deselections are the same for both brokers and each has its reason in docs/compat.md.
SUITES = [
    Suite("py-amqp", SDISTS["amqp"], "pytest", f"amqp-{SDISTS['amqp']}",
          ["t/integration", "-k", "not tls"], fast=True, timeout=300,
          note="-k 'not tls': the sdist lacks t/certs; two tests dial tls-v1-2.badssl.com"),
    Suite("kombu", SDISTS["kombu"], "pytest", f"kombu-{SDISTS['kombu']}",
          ["t/integration/test_py_amqp.py"], fast=True, timeout=600),
    Suite("aiormq", SDISTS["aiormq"], "pytest", f"aiormq-{SDISTS['aiormq']}",
          ["tests", "-k", f"not amqps and not ssl and not {AIORMQ_TIMING[0]} and not {AIORMQ_TIMING[1]}"],
          docker=True, note="TLS tests: RabbitMQ here has no TLS listener (see aiormq-tls); "
          "two timing tests fail at random against both brokers"),
    Suite("aiormq-tls", SDISTS["aiormq"], "pytest", f"aiormq-{SDISTS['aiormq']}",
          ["tests", "-k", f"(amqps or ssl) and not {AIORMQ_TIMING[0]} and not {AIORMQ_TIMING[1]}"],
          docker=True, warren_only=True,
          note="aiormq's TLS tests with its tests/certs; Warren only (no TLS RabbitMQ here)"),
    Suite("aio-pika", SDISTS["aio-pika"], "pytest", f"aio_pika-{SDISTS['aio-pika']}",
          ["tests", "-k", "not amqps"], docker=True,
          note="-k 'not amqps': the sdist lacks the certificates test_amqps.py needs"),
    Suite("amqp091-go", "1.5.0 (Debian)", "go", timeout=900),
]


@dataclass
class Result:
    suite: str
    version: str
    broker: str
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    deselected: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    log: str = ""


# ---- preparation ---------------------------------------------------------------------


def prepare(log=print) -> None:
    """Download the pinned sdists, unpack them and build the virtualenv (network once)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    downloads = CACHE / "sdists"
    downloads.mkdir(exist_ok=True)
    wanted = {name: version for name, version in SDISTS.items() if not _sdist(name, version)}
    if wanted:
        log(f"downloading sdists: {', '.join(f'{n}=={v}' for n, v in wanted.items())}")
        # --no-binary only for these packages: their build backends may come as wheels
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--no-binary", ",".join(wanted), "-d", str(downloads),
                        *(f"{n}=={v}" for n, v in wanted.items())], check=True)
    src = CACHE / "src"
    src.mkdir(exist_ok=True)
    for name, version in SDISTS.items():
        archive = _sdist(name, version)
        assert archive is not None, f"{name}=={version} sdist missing"
        if not (src / archive.name.removesuffix(".tar.gz")).exists():
            with tarfile.open(archive) as tar:
                tar.extractall(src, filter="data")
    marker = VENV / "compat-installed.json"
    spec = {"sdists": SDISTS, "requirements": TEST_REQUIREMENTS}
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return
    log(f"building {VENV}")
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV_PYTHON), "-m", "pip", "install", "-q", *TEST_REQUIREMENTS,
                    *(str(_sdist(n, v)) for n, v in SDISTS.items())], check=True)
    marker.write_text(json.dumps(spec))


def _sdist(name: str, version: str) -> Path | None:
    for candidate in (name, name.replace("-", "_")):
        path = CACHE / "sdists" / f"{candidate}-{version}.tar.gz"
        if path.exists():
            return path
    return None


def prepared() -> bool:
    return (VENV / "compat-installed.json").exists() and all(
        (CACHE / "src" / s.directory).exists() for s in SUITES if s.directory)


# ---- brokers -------------------------------------------------------------------------


class RabbitMQ:
    """This machine's rabbitmq-server on port 5675, started in the background if needed."""

    def __init__(self) -> None:
        self.base = Path(tempfile.gettempdir()) / "warren-compat-rabbitmq"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ctl = ["rabbitmqctl", "-n", RABBITMQ_NODE]

    def start(self) -> None:
        if _port_open(RABBITMQ_PORT):
            return
        env = {**os.environ, "RABBITMQ_NODE_PORT": str(RABBITMQ_PORT),
               "RABBITMQ_NODENAME": RABBITMQ_NODE,
               "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
               "RABBITMQ_LOG_BASE": str(self.base / "log")}
        # rabbitmq-server runs as the rabbitmq user: it creates base/ itself
        self.proc = subprocess.Popen(["rabbitmq-server"], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not _port_open(RABBITMQ_PORT):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rabbitmq-server did not start; see {self.base / 'log'}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None:
            subprocess.run([*self.ctl, "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.proc.wait(timeout=60)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# ---- running -------------------------------------------------------------------------


def run_suite(suite: Suite, broker: str, port: int | None, out_dir: Path,
              extra: list[str] | None = None) -> Result:
    """Run one suite against ``port`` (None: the docker plugin starts Warren nodes)."""
    result = Result(suite.name, suite.version, broker)
    started = time.monotonic()
    if suite.kind == "go":
        _run_go(suite, broker, port, out_dir, result)
    else:
        _run_pytest(suite, broker, port, out_dir, result, extra or [])
    result.seconds = round(time.monotonic() - started, 1)
    return result


def suite_env(port: int | None, broker: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(HERE)
    env["WARREN_COMPAT_PYTHON"] = os.environ.get("WARREN_COMPAT_PYTHON", sys.executable)
    if port is not None:
        env.update(RABBITMQ_HOST="127.0.0.1", RABBITMQ_5672_TCP=str(port),
                   RABBITMQ_5671_TCP="1",  # no TLS listener: the TLS tests are deselected
                   AMQP_URL=f"amqp://guest:guest@127.0.0.1:{port}/")
    if broker == "rabbitmq":
        env.update(WARREN_COMPAT_AMQP_PORT=str(RABBITMQ_PORT),
                   WARREN_COMPAT_RABBITMQCTL=f"rabbitmqctl -n {RABBITMQ_NODE}")
    return env


def _run_pytest(suite: Suite, broker: str, port: int | None, out_dir: Path, result: Result,
                extra: list[str]) -> None:
    junit = out_dir / f"{suite.name}-{broker}.xml"
    log = out_dir / f"{suite.name}-{broker}.log"
    cmd = [str(VENV_PYTHON), "-m", "pytest", *suite.args, "-q", "-rfE", "-W", "ignore",
           "-p", "no:cacheprovider", "-p", "no:rerunfailures", "--timeout", "60",
           f"--junitxml={junit}", *extra]
    if suite.docker:
        cmd += ["-p", "warren_docker"]
    with log.open("w") as out:
        try:
            subprocess.run(cmd, cwd=CACHE / "src" / suite.directory, env=suite_env(port, broker),
                           stdout=out, stderr=subprocess.STDOUT, timeout=suite.timeout)
        except subprocess.TimeoutExpired:
            out.write(f"\n*** suite timed out after {suite.timeout}s\n")
    result.log = str(log)
    summary = re.search(r"(\d+) deselected", log.read_text(errors="replace")[-3000:])
    result.deselected = int(summary.group(1)) if summary else 0
    if not junit.exists():
        result.errors = 1
        result.failures.append("no junit report (see log)")
        return
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("skipped") is not None:
            result.skipped += 1
        elif case.find("failure") is not None:
            result.failed += 1
            result.failures.append(name)
        elif case.find("error") is not None:
            result.errors += 1
            result.failures.append(name)
        else:
            result.passed += 1


def _run_go(suite: Suite, broker: str, port: int | None, out_dir: Path, result: Result) -> None:
    assert port is not None
    log = out_dir / f"{suite.name}-{broker}.log"
    work = Path(tempfile.mkdtemp(prefix="warren-compat-go-"))
    try:
        package = work / "src" / "github.com" / "rabbitmq" / "amqp091-go"
        shutil.copytree(GO_SRC, package)
        env = {**os.environ, "GOPATH": f"{work}:/usr/share/gocode", "GO111MODULE": "off",
               "GOFLAGS": "", "GOPROXY": "off", "GOCACHE": str(CACHE / "gocache"),
               "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{port}/"}
        with log.open("w") as out:
            try:
                subprocess.run(["go", "test", "-tags", "integration", "-count=1", "-v",
                                "-timeout", f"{suite.timeout}s", "."], cwd=package, env=env,
                               stdout=out, stderr=subprocess.STDOUT, timeout=suite.timeout + 60)
            except subprocess.TimeoutExpired:
                out.write(f"\n*** suite timed out after {suite.timeout}s\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.log = str(log)
    # top-level results only (subtests are indented); a panic ends the binary: the rest is lost
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("--- PASS"):
            result.passed += 1
        elif line.startswith("--- FAIL"):
            result.failed += 1
            result.failures.append(line.split()[2])
        elif line.startswith("--- SKIP"):
            result.skipped += 1
        elif line.startswith("panic:"):
            result.errors += 1
            result.failures.append("panic: the test binary stopped")


def run(suites: list[Suite], brokers: list[str], out_dir: Path) -> list[Result]:
    results = []
    for broker in brokers:
        rabbit = RabbitMQ() if broker == "rabbitmq" else None
        if rabbit is not None:
            rabbit.start()
        try:
            for suite in suites:
                if suite.warren_only and broker != "warren":
                    continue
                print(f"== {suite.name} {suite.version} against {broker}", flush=True)
                node = None
                if broker == "warren" and not suite.docker:
                    node = start_warren()  # a fresh node per suite
                port = node.amqp_port if node else (RABBITMQ_PORT if rabbit else None)
                try:
                    result = run_suite(suite, broker, port, out_dir)
                finally:
                    if node is not None:
                        node.remove()
                print(_row(result), flush=True)
                results.append(result)
        finally:
            if rabbit is not None:
                rabbit.stop()
    return results


HEADER = (f"{'suite':<12} {'version':<15} {'broker':<9} {'passed':>6} {'failed':>6} {'errors':>6} "
          f"{'skipped':>7} {'deselected':>10} {'secs':>6}")


def _row(r: Result) -> str:
    return (f"{r.suite:<12} {r.version:<15} {r.broker:<9} {r.passed:>6} {r.failed:>6} {r.errors:>6} "
            f"{r.skipped:>7} {r.deselected:>10} {r.seconds:>6}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", choices=["warren", "rabbitmq", "both"], default="warren")
    parser.add_argument("--suites", default=",".join(s.name for s in SUITES),
                        help="comma-separated: " + ", ".join(s.name for s in SUITES))
    parser.add_argument("--prepare", action="store_true", help="only download and install")
    parser.add_argument("--out", default=str(CACHE / "results"), help="logs, junit XML, results.json")
    args = parser.parse_args(argv)
    prepare()
    if args.prepare:
        return 0
    names = args.suites.split(",")
    unknown = set(names) - {s.name for s in SUITES}
    if unknown:
        parser.error(f"unknown suites: {', '.join(sorted(unknown))}")
    suites = [s for s in SUITES if s.name in names]
    brokers = ["warren", "rabbitmq"] if args.broker == "both" else [args.broker]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = run(suites, brokers, out_dir)
    (out_dir / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    print()
    print(HEADER)
    for result in results:
        print(_row(result))
    for result in results:
        if result.failures:
            print(f"\n{result.suite} on {result.broker}, not passed ({result.log}):")
            for name in result.failures:
                print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
