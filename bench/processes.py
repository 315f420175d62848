"""The processes a bench run starts (its own Redis, the echo server, the mesh) and what the
harness reads from them: CPU time and RSS from /proc, Redis INFO, and a MONITOR sample that tells
client round trips apart from the commands Lua scripts run inside Redis."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_SETPRIV = shutil.which("setpriv")


def with_parent(argv: list[str]) -> list[str]:
    """argv that gets SIGTERM when the harness dies (util-linux `setpriv --pdeathsig`), so a killed
    bench run leaves no Redis or server behind. Not a preexec_fn: Python code between fork and exec
    aborts when gRPC threads are running in the harness."""
    return [_SETPRIV, "--pdeathsig", "TERM", "--", *argv] if _SETPRIV else argv


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def harness_cpu_seconds(exclude: set[int]) -> float:
    """CPU seconds of this process and its children other than `exclude` (the servers and Redis):
    the load generators (h2load, bench.loadgen) and the harness itself. Children already reaped
    count through RUSAGE_CHILDREN, running (or not yet reaped) ones through /proc, so a
    generator that exits inside a measured window is still counted."""
    import resource

    me = os.getpid()
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me or int(entry) in exclude:
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == me:
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class Process:
    """A server we started: its Popen, where it listens and where its output goes."""

    name: str
    popen: subprocess.Popen
    port: int
    log_path: Path | None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def logs(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(output discarded)"
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 20) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


ROOT = Path(__file__).resolve().parents[1]


def spawn(name: str, argv: list[str], port: int, log_path: Path | None, env: dict[str, str] | None = None,
          cwd: Path | None = ROOT) -> Process:
    output = log_path.open("ab") if log_path is not None else subprocess.DEVNULL
    popen = subprocess.Popen(with_parent(argv), env={**os.environ, **(env or {})}, stdout=output,
                             stderr=subprocess.STDOUT, cwd=cwd)
    return Process(name, popen, port, log_path)


def wait_serving(processes: list[Process], timeout: float = 60) -> None:
    """Until every process answers grpc.health.v1 SERVING on its port."""
    deadline = time.monotonic() + timeout
    for process in processes:
        with grpc.insecure_channel(process.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if process.popen.poll() is not None:
                    raise RuntimeError(f"{process.name} exited with {process.popen.returncode}:\n{process.logs()}")
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    process.popen.kill()
                    raise TimeoutError(f"{process.name} not serving after {timeout}s:\n{process.logs()}")
                time.sleep(0.1)


class RedisServer:
    """A private redis-server on a free port: AOF with appendfsync always (the ledger's production
    default, README "Durability"), no RDB snapshots."""

    def __init__(self, workdir: Path) -> None:
        # Same override as the tests (`make bench` sets it from scripts/ensure_redis.sh).
        binary = os.environ.get("GIFTCARD_TEST_REDIS_SERVER") or shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server not found: run scripts/ensure_redis.sh or set GIFTCARD_TEST_REDIS_SERVER")
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.popen = subprocess.Popen(
            with_parent([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
             "--loglevel", "warning"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(port=self.port, decode_responses=True)
        deadline = time.monotonic() + 15
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.popen.poll() is not None:
                    self.popen.kill()
                    raise
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stats(self) -> dict:
        """Counters the harness diffs around a run."""
        info = self.client.info("all")
        commands = {
            key[len("cmdstat_"):]: value["calls"]
            for key, value in info.items() if key.startswith("cmdstat_")
        }
        return {
            "total_commands": info["total_commands_processed"],
            "commands": commands,
            "used_memory": info["used_memory"],
            # Without client buffers, AOF buffer and other overhead: what the data itself takes.
            "used_memory_dataset": info["used_memory_dataset"],
        }

    def stop(self) -> None:
        self.client.close()
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()


@dataclass
class MonitorSample:
    """Commands seen by MONITOR: from clients (a round trip each, except commands the mesh sends
    in one pipeline) and from inside Lua scripts."""

    client_commands: dict[str, int] = field(default_factory=dict)
    script_commands: dict[str, int] = field(default_factory=dict)
    # Client commands in order, with the harness's ECHO markers as ("marker", text).
    sequence: list[tuple[str, str]] = field(default_factory=list)

    @property
    def client_total(self) -> int:
        return sum(self.client_commands.values())


def script_names(root: Path) -> dict[str, str]:
    """SHA1 -> script name for every Lua script in the repository, as the mesh loads them
    (the native ledger prepends its lib.lua), so MONITOR's EVALSHA lines can be named."""
    import hashlib

    names: dict[str, str] = {}
    for path in root.rglob("*.lua"):
        if ".venv" in path.parts:
            continue
        text = path.read_text()
        names[hashlib.sha1(text.encode()).hexdigest()] = path.stem
        library = path.with_name("lib.lua")
        if library.exists() and path.name != "lib.lua":
            combined = library.read_text() + text
            names[hashlib.sha1(combined.encode()).hexdigest()] = f"ledger.{path.stem}"
    return names


class Monitor:
    """MONITOR on a raw socket, in a thread; `stop()` returns the sample.

    INFO commandstats cannot give round trips: it counts the redis.call()s inside a script as well
    as the EVALSHA that ran it. MONITOR marks script commands with `[0 lua]`."""

    def __init__(self, port: int, names: dict[str, str] | None = None) -> None:
        self._names = names or {}
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.sendall(b"MONITOR\r\n")
        self._buffer = b""
        self._lines: list[bytes] = []
        self._stopped = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _read(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stopped.is_set():
            try:
                chunk = self._sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\r\n")
            for line in lines:
                if line == b"+OK":
                    self._ready.set()
                else:
                    self._lines.append(line)

    def stop(self) -> MonitorSample:
        time.sleep(0.2)  # let the last commands arrive
        self._stopped.set()
        self._thread.join(5)
        self._sock.close()
        sample = MonitorSample()
        for line in self._lines:
            # +1700000000.123456 [0 127.0.0.1:5555] "evalsha" "..." ...
            try:
                source = line.split(b"[", 1)[1].split(b"]", 1)[0].split()[1]
                quoted = line.split(b'"')
                command = quoted[1].decode().lower()
                if command == "evalsha" and source != b"lua":
                    command = f"evalsha:{self._names.get(quoted[3].decode(), quoted[3].decode()[:8])}"
            except IndexError:
                continue
            if source != b"lua" and command in ("info", "echo"):
                # The harness's own INFO (round-trip counts) and ECHO (markers between calls).
                if command == "echo" and len(quoted) > 3:
                    sample.sequence.append(("marker", quoted[3].decode(errors="replace")))
                continue
            if source != b"lua":
                sample.sequence.append(("command", command))
            bucket = sample.script_commands if source == b"lua" else sample.client_commands
            bucket[command] = bucket.get(command, 0) + 1
        return sample


def python() -> str:
    return sys.executable
