"""Run a simulator with uvicorn on 127.0.0.1, in a background thread (tests) or in the foreground (CLI).

uvicorn is pinned to its h11 protocol because the `reset` fault needs the transport that h11's
request cycle exposes. Hangs end when `stop()` is called, so teardown is quick even with a request
hung by `timeout-after` / `timeout-before`.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from typing import Any

import uvicorn

from .app import Simulator


def _config(simulator: Simulator, *, access_log: bool, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        simulator.app, http="h11", lifespan="off", log_level=log_level, access_log=access_log,
        proxy_headers=False, server_header=False, timeout_graceful_shutdown=2,
    )


class RunningSimulator:
    """A simulator served on a background thread; `base_url` like http://127.0.0.1:PORT."""

    def __init__(self, simulator: Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.simulator = simulator
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when the
        # listening socket says TCP explicitly; without it every reply waits ~40 ms on delayed ACKs.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        self.base_url = f"http://{self.host}:{self.port}"
        self._server = uvicorn.Server(_config(simulator, access_log=False, log_level="warning"))
        self._thread = threading.Thread(target=self._run, name=f"sim-{simulator.vendor}", daemon=True)
        self._error: BaseException | None = None

    @property
    def vendor(self) -> str:
        return self.simulator.vendor

    @property
    def ledger(self) -> Any:
        return self.simulator.ledger

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException as exc:  # surfaced by start()/stop()
            self._error = exc

    def start(self, timeout: float = 10.0) -> "RunningSimulator":
        self._thread.start()
        deadline = threading.Event()
        waited = 0.0
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"{self.vendor} simulator failed to start") from self._error
            if waited >= timeout:
                raise TimeoutError(f"{self.vendor} simulator did not start within {timeout}s")
            deadline.wait(0.01)
            waited += 0.01
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.simulator.faults.stopping.set()
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> "RunningSimulator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(simulator: Simulator, host: str, port: int) -> None:
    """Foreground server for `python -m gateway.simulators`; Ctrl-C / SIGTERM stop it."""
    config = _config(simulator, access_log=True, log_level="info")
    config.host, config.port = host, port
    server = uvicorn.Server(config)
    # uvicorn drains, restores the previous handler and re-raises the signal it caught: make that
    # previous handler a clean exit, so SIGTERM ends the process with status 0 like the mesh servers.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        server.run()
    finally:
        simulator.faults.stopping.set()


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)
