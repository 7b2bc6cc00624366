"""The console's command server: how ``hostsim vim-cmd …`` in another shell reaches a host that
``hostsim boot`` keeps running paced to real time.

One Unix socket per host (``STATE_DIR/NAME.sock``), one JSON request per connection (``{"op":
"vim-cmd", "argv": [...]}``) and one JSON answer (``{"output": "...", "rc": 0}``).  A request is
never served on the server's thread: it is posted into the engine's loop
(:meth:`hostsim.vmkernel.engine.Engine.post`) and runs between two events, at the simulated time
of its arrival, so an administrator's command is just another event of the simulation and the
host's state is only ever touched by the loop.  Why a socket and not a TCP port: the console of a
simulated host is local administration (as the ESX console is), file permissions guard it, and
no port has to be found free.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hostsim.errors import HostsimError

#: requests larger than this are refused (a console command is a few hundred bytes)
MAX_REQUEST = 1 << 20
#: how long a client waits for the host's loop to run its request
REPLY_TIMEOUT_S = 60.0

Handler = Callable[[dict[str, Any]], dict[str, Any]]
Poster = Callable[[Callable[[], None]], None]


class ConsoleUnreachable(HostsimError):
    """No host answers on the socket (not booted, stopped, or another state directory)."""


def socket_path(state_dir: str | os.PathLike[str], host_name: str) -> Path:
    return Path(state_dir) / f"{host_name}.sock"


class CommandServer:
    """Serves requests on ``path``; each runs as ``handler(request)`` inside the engine's loop."""

    def __init__(self, path: Path, handler: Handler, post: Poster) -> None:
        self.path = path
        self.handler = handler
        self.post = post
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            if _answers(path):
                raise HostsimError(f"{path}: another host of that name is running (its console answers there)")
            path.unlink()
        server = self

        class _Request(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                server._serve(self.rfile, self.wfile)

        self._server = socketserver.ThreadingUnixStreamServer(str(path), _Request)
        self._server.daemon_threads = True
        os.chmod(path, 0o600)
        self._thread = threading.Thread(target=self._server.serve_forever, name="hostsim-console", daemon=True)
        self._thread.start()

    def _serve(self, rfile: Any, wfile: Any) -> None:
        raw = rfile.readline(MAX_REQUEST + 1)
        try:
            if len(raw) > MAX_REQUEST:
                raise HostsimError("request too large")
            request = json.loads(raw)
            if not isinstance(request, dict) or not isinstance(request.get("op"), str):
                raise HostsimError("malformed request: a JSON object with an \"op\" is expected")
        except (ValueError, HostsimError) as exc:
            reply: dict[str, Any] = {"output": f"hostsim console: {exc}\n", "rc": 2}
        else:
            reply = self._in_loop(request)
        wfile.write(json.dumps(reply).encode() + b"\n")

    def _in_loop(self, request: dict[str, Any]) -> dict[str, Any]:
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["reply"] = self.handler(request)
            except HostsimError as exc:
                box["reply"] = {"output": f"{exc}\n", "rc": 1}
            except Exception as exc:  # a bug must not kill the host's loop; say it in one line
                box["reply"] = {"output": f"hostsim console: internal error: {type(exc).__name__}: {exc}\n", "rc": 70}
            finally:
                done.set()

        self.post(run)
        if not done.wait(REPLY_TIMEOUT_S):
            return {"output": "hostsim console: the host did not run the request in time\n", "rc": 75}
        return box["reply"]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def request(path: Path, op: str, **fields: Any) -> dict[str, Any]:
    """Send one request to the host whose console listens on ``path``; its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(REPLY_TIMEOUT_S + 5)
        try:
            s.connect(str(path))
        except OSError as exc:
            raise ConsoleUnreachable(f"{path}: no host console answers ({exc.strerror or exc})") from None
        s.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
        with s.makefile("rb") as f:
            line = f.readline()
    if not line:
        raise ConsoleUnreachable(f"{path}: the host closed the connection without an answer")
    reply = json.loads(line)
    if not isinstance(reply, dict):
        raise ConsoleUnreachable(f"{path}: not a hostsim console")
    return reply
