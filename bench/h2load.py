"""h2load (nghttp2-client) for scenarios where one repeated body is right: the echo baseline,
GetBalance, AuthorizeReplay.

h2load speaks plain HTTP/2, so the body is gRPC-framed here (1 flag byte + 4-byte length) and the
gRPC headers are set by hand. h2load counts HTTP 200 as success even when the gRPC status in the
trailers is an error, so the harness checks the gRPC status of the same body with a real gRPC
client before and after every run (`check_status`).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from array import array
from dataclasses import dataclass
from pathlib import Path

import grpc


def ensure_h2load() -> str:
    """Path of h2load; installs Debian's nghttp2-client when missing and running as root."""
    found = shutil.which("h2load")
    if found:
        return found
    import os

    if os.geteuid() == 0 and shutil.which("apt-get"):
        for command in (["apt-get", "install", "-y", "-q", "nghttp2-client"],
                        ["apt-get", "update", "-qq"],  # a fresh machine may have no package lists
                        ["apt-get", "install", "-y", "-q", "nghttp2-client"]):
            subprocess.run(command, check=False, stdout=subprocess.DEVNULL,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            found = shutil.which("h2load")
            if found:
                return found
    raise RuntimeError("h2load not found: install nghttp2-client (apt-get install -y nghttp2-client)")


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


@dataclass
class H2loadResult:
    rps: float
    requests: int
    succeeded_http: int
    failed_http: int
    latencies: array  # seconds, main phase only
    output: str


def run_h2load(
    binary: str, target: str, method: str, body: bytes, metadata: list[tuple[str, str]],
    *, workdir: Path, duration: float, warmup: float, connections: int, streams_per_connection: int,
    name: str,
) -> H2loadResult:
    body_file = workdir / f"{name}.body"
    body_file.write_bytes(grpc_frame(body))
    log_file = workdir / f"{name}.h2load.tsv"
    log_file.unlink(missing_ok=True)
    command = [
        binary, "-c", str(connections), "-m", str(streams_per_connection),
        "-D", f"{int(duration * 1000)}ms", "--warm-up-time", f"{int(warmup * 1000)}ms",
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        *[arg for key, value in metadata for arg in ("-H", f"{key}: {value}")],
        "-d", str(body_file), "--log-file", str(log_file),
        f"http://{target}{method}",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=duration + warmup + 60)
    output = completed.stdout + completed.stderr
    if completed.returncode != 0:
        raise RuntimeError(f"h2load failed ({completed.returncode}): {output[-2000:]}")
    rps_match = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", output)
    req_match = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", output)
    if not rps_match or not req_match:
        raise RuntimeError(f"cannot parse h2load output: {output[-2000:]}")
    latencies = array("d")
    for line in log_file.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[1] == "200":
            latencies.append(int(parts[2]) / 1e6)
    return H2loadResult(
        rps=float(rps_match.group(1)), requests=int(req_match.group(1)),
        succeeded_http=int(req_match.group(2)), failed_http=int(req_match.group(3)),
        latencies=latencies, output=output,
    )


def check_status(target: str, method: str, body: bytes, metadata: list[tuple[str, str]],
                 timeout: float = 10) -> tuple[grpc.StatusCode, str, bytes | None]:
    """The gRPC status (and response bytes) the server gives this exact body."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        try:
            response = call(body, metadata=tuple(metadata), timeout=timeout)
            return grpc.StatusCode.OK, "", response
        except grpc.RpcError as error:
            return error.code(), error.details() or "", None
