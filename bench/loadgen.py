"""Load client for scenarios that need a different body on every call (a fresh request_id).

grpcio's sync channel with `.future()` calls on pre-built raw bodies (no protobuf work on the hot
path), a fixed window of calls in flight spread over several HTTP/2 connections. This was the
fastest Python generator measured here (an asyncio client is several times slower); the harness
always takes the echo baseline with h2load, so a client bottleneck can only make the mesh's ratio
look worse, never better.

Bodies are spliced, not serialized: each call's unique id is written as length-delimited fields
(`id_fields`, e.g. request_id = 1 and order_id = 2) in front of a pre-serialized remainder
("variant", e.g. the card and amount). Protobuf accepts fields in any order, so the server sees
an ordinary message.

Run by the harness as `python -m bench.loadgen SPEC.json`: connects, prints READY, reads the
start time (time.time()) from stdin so that several generators start together, runs, prints one
JSON line of counts and writes the latencies (float64 seconds, calls started inside the measured
window) to a file.

The measured window is `duration` seconds after `warmup`, stretched (up to `max_stretch` seconds)
until `min_calls` calls started in it have succeeded: on an overloaded machine a sub-second smoke
window could otherwise end before any call completes.

Spec keys: target, method, metadata [[k, v]], warmup, duration, min_calls, max_stretch,
max_calls (optional), window, connections, id_prefix, id_fields, variants_file, variants_once,
variants_offset, variants_stride, collect_file (optional), latency_file, timeout.
"""

from __future__ import annotations

import json
import struct
import sys
import threading
import time
from array import array

import grpc


def read_records(path: str) -> list[bytes]:
    """Records written by `write_records`: 4-byte big-endian length + bytes, repeated."""
    records = []
    with open(path, "rb") as handle:
        data = handle.read()
    offset = 0
    while offset < len(data):
        (size,) = struct.unpack_from(">I", data, offset)
        offset += 4
        records.append(data[offset:offset + size])
        offset += size
    return records


def write_records(path: str, records) -> None:
    with open(path, "wb") as handle:
        for record in records:
            handle.write(struct.pack(">I", len(record)))
            handle.write(record)


def _id_head(fields: list[int], uid: bytes) -> bytes:
    # Length-delimited field (wire type 2); ids are < 128 bytes so the length is one byte.
    piece = bytes([len(uid)]) + uid
    return b"".join(bytes([(number << 3) | 2]) + piece for number in fields)


def run(spec: dict, wait_for_start) -> dict:
    variants = read_records(spec["variants_file"])
    once = bool(spec.get("variants_once"))
    offset = int(spec.get("variants_offset", 0))
    stride = int(spec.get("variants_stride", 1))
    if once:
        variants = variants[offset::stride]
    fields = list(spec.get("id_fields", []))
    prefix = spec["id_prefix"]
    metadata = tuple(tuple(pair) for pair in spec.get("metadata", []))
    timeout = float(spec.get("timeout", 10))
    window = int(spec["window"])
    max_calls = spec.get("max_calls")
    collect = spec.get("collect_file")

    channels = [
        # A local subchannel pool per channel: one TCP connection each (otherwise grpcio shares one).
        grpc.insecure_channel(spec["target"], options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(int(spec["connections"]))
    ]
    for channel in channels:
        grpc.channel_ready_future(channel).result(timeout=30)
    callables = [channel.unary_unary(spec["method"]) for channel in channels]  # bytes in, bytes out

    latencies = array("d")
    errors: dict[str, int] = {}
    error_samples: list[str] = []
    collected: list[bytes] = []
    counts = {"ok": 0, "measured_ok": 0, "measured_calls": 0}
    lock = threading.Lock()
    slots = threading.BoundedSemaphore(window)

    start_at = float(wait_for_start())
    measure_from = start_at + float(spec.get("warmup", 0))
    measure_to = measure_from + float(spec["duration"])
    min_calls = int(spec.get("min_calls", 0))
    stretch_to = measure_to + float(spec.get("max_stretch", 0))
    now = time.time()
    if start_at > now:
        time.sleep(start_at - now)
    # perf_counter for latencies, wall clock only to align the window with the harness.
    clock_offset = time.time() - time.perf_counter()
    measure_from_pc = measure_from - clock_offset
    bounds = {"to": measure_to - clock_offset}
    stretch_to_pc = stretch_to - clock_offset
    last_done = [0.0]

    def on_done(future, started: float) -> None:
        finished = time.perf_counter()
        code = future.code()
        measured = measure_from_pc <= started < bounds["to"]
        with lock:
            if measured:
                counts["measured_calls"] += 1
                last_done[0] = max(last_done[0], finished)
            if code == grpc.StatusCode.OK:
                counts["ok"] += 1
                if measured:
                    counts["measured_ok"] += 1
                    latencies.append(finished - started)
                if collect is not None:
                    collected.append(future.result())
            else:
                errors[code.name] = errors.get(code.name, 0) + 1
                if len(error_samples) < 5:
                    error_samples.append(f"{code.name}: {future.details()}")
        slots.release()

    issued = 0
    n_variants = len(variants)
    n_callables = len(callables)
    while True:
        if max_calls is not None and issued >= max_calls:
            break
        if once and issued >= n_variants:
            break
        slots.acquire()
        started = time.perf_counter()
        if started >= bounds["to"] and max_calls is None:
            if counts["measured_ok"] < min_calls and started < stretch_to_pc:
                bounds["to"] = started + 0.05  # stretch: keep measuring until min_calls succeeded
            else:
                slots.release()
                break
        uid = f"{prefix}{issued}".encode()
        body = _id_head(fields, uid) + variants[issued % n_variants]
        future = callables[issued % n_callables].future(body, metadata=metadata, timeout=timeout)
        future.add_done_callback(lambda f, s=started: on_done(f, s))
        issued += 1
    exhausted_at = time.perf_counter()
    for _ in range(window):  # drain: wait for every call in flight
        slots.acquire(timeout=timeout + 5)
    if collect is not None:
        write_records(collect, collected)
    with open(spec["latency_file"], "wb") as handle:
        latencies.tofile(handle)
    # The measured window ends early if the bodies ran out (e.g. Capture used every hold).
    window_end = min(bounds["to"], max(exhausted_at, last_done[0])) if once else bounds["to"]
    for channel in channels:
        channel.close()
    return {
        "issued": issued,
        "ok": counts["ok"],
        "measured_ok": counts["measured_ok"],
        "measured_calls": counts["measured_calls"],
        "measured_seconds": max(window_end - measure_from_pc, 1e-9),
        "errors": errors,
        "error_samples": error_samples,
    }


def main() -> None:
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    def wait_for_start() -> str:
        print("READY", flush=True)
        return sys.stdin.readline()

    print(json.dumps(run(spec, wait_for_start)), flush=True)


if __name__ == "__main__":
    main()
