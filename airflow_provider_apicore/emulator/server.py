"""Run the emulator with uvicorn in a background thread (tests, benchmarks, demos)."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
import urllib.request
from types import TracebackType
from typing import Any

import uvicorn

from airflow_provider_apicore.emulator.app import create_app
from airflow_provider_apicore.emulator.config import EmulatorConfig


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """
    A listening-ready TCP socket; port 0 lets the kernel pick a free port.

    Binding here, rather than letting uvicorn bind, means the port is known before the server
    starts and cannot be taken by someone else in between.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def base_url_for(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class EmulatorServer:
    """
    The emulator served by uvicorn on a free loopback port, in a daemon thread.

    ``EmulatorServer(config).start()`` returns the base URL; ``stop()`` shuts it down. Also a
    context manager. Admin conveniences (:meth:`stats`, :meth:`configure`, :meth:`reset`,
    :meth:`tasks`) go over HTTP like any client would.

    :param config: behaviour of the emulated account; defaults to :class:`EmulatorConfig()`.
    :param host: interface to bind.
    :param port: port to bind; 0 picks a free one.
    :param http: uvicorn HTTP implementation: ``auto``, ``h11`` or ``httptools``.
    :param log_level: uvicorn log level.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        http: str = "auto",
        log_level: str = "warning",
    ) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self.host = host
        self.port = port
        self.http = http
        self.log_level = log_level
        self.url: str | None = None
        self.app = create_app(self.config)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> str:
        """
        Start serving and wait until requests are accepted.

        :param timeout: seconds to wait for uvicorn to come up.
        :return: the base URL, e.g. ``http://127.0.0.1:54321``.
        """
        if self._thread is not None:
            raise RuntimeError("the emulator server is already running")
        sock = bind_socket(self.host, self.port)
        config = uvicorn.Config(
            self.app,
            http=self.http,
            lifespan="on",
            log_level=self.log_level,
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.name = f"apicore-emulator-{sock.getsockname()[1]}"
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise RuntimeError(f"the emulator did not start within {timeout} s")
            time.sleep(0.01)
        self._server, self._thread = server, thread
        self.port = sock.getsockname()[1]
        self.url = base_url_for(sock)
        return self.url

    def stop(self, timeout: float = 10.0, *, wait: bool = True) -> None:
        """
        Stop serving; in-flight requests get one second to finish.

        :param timeout: seconds to wait for the server thread to end.
        :param wait: False returns at once and lets the thread finish in the background (about
            0.2 s), for test suites that start many servers.
        """
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        if wait:
            self._thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -------------------------------------------------------------------------- admin helpers
    def _admin(self, method: str, path: str, payload: Any = None) -> Any:
        if self.url is None:
            raise RuntimeError("the emulator server is not running; call start() first")
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        # A direct opener: proxy variables must not reroute loopback admin calls.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        """``GET /_emulator/stats``."""
        return self._admin("GET", "/_emulator/stats")

    def configure(self, **changes: Any) -> dict[str, Any]:
        """``PUT /_emulator/config`` with a partial update, e.g. ``configure(faults={"slow": 1.0})``."""
        return self._admin("PUT", "/_emulator/config", changes)

    def reset(self) -> None:
        """``POST /_emulator/reset``: forget tasks and counters, restart the fault streams."""
        self._admin("POST", "/_emulator/reset", {})

    def tasks(self, state: str | None = None) -> list[dict[str, Any]]:
        """Task objects, all of them or those submitted with ``state``."""
        query = "" if state is None else "?" + urllib.parse.urlencode({"state": state})
        return self._admin("GET", "/_emulator/tasks" + query)
