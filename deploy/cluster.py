"""The docker-compose topology without Docker: redis-server, N app instances and nginx, all on loopback.

Uses Debian's `nginx` and `redis-server` (apt-get install nginx redis-server) and the serving venv:

    python -m deploy.cluster --instances 2 --port 8080      # then open http://localhost:8080

Each instance is the Procfile's server (gunicorn, one eventlet worker) with MESSAGE_QUEUE pointing at the
redis-server; nginx renders `deploy/moodlens.conf.template`, the same file the nginx container uses.
The scale-out test and `bench.scale_bench` start clusters with `Cluster`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from deploy.procfile import web_process

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).resolve().parent / "moodlens.conf.template"
MIME_TYPES = Path("/etc/nginx/mime.types")


def free_port() -> int:
    """A TCP port free on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    """Whether something listens on `port` on the loopback interface already."""
    with socket.socket() as s:
        # as nginx binds: a port whose last connections linger in TIME_WAIT is free to listen on
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def missing_tools() -> list[str]:
    """The system programs a cluster needs that are not installed."""
    return [tool for tool in ("nginx", "redis-server") if not shutil.which(tool)]


def wait_until(ready, process: subprocess.Popen | None, what: str, timeout: float) -> None:
    """Poll `ready()` until it is true; `what` names it in the errors ("http://...:8001/healthz answered").

    Raises:
        RuntimeError: `process` exited or `timeout` seconds passed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited with {process.returncode} before {what}")
        if ready():
            return
        time.sleep(0.2)
    raise RuntimeError(f"not {what} in {timeout} s")


def answers(url: str) -> bool:
    """Whether `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return reply.status == 200
    except OSError:
        return False


def listens(port: int) -> bool:
    """Whether something accepts connections on loopback `port` now."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def wait_ready(url: str, process: subprocess.Popen | None, timeout: float) -> None:
    """Poll `url` until it answers 200.

    Raises:
        RuntimeError: `process` exited or `timeout` seconds passed.
    """
    wait_until(lambda: answers(url), process, f"{url} answered", timeout)


def nginx_config(upstreams: list[str], listen: str, runtime: Path, sticky_key: str = "$remote_addr") -> str:
    """A complete nginx.conf for a loopback cluster: the shared template inside a main file that keeps
    every path (pid, logs, temporary files) in `runtime`, so nginx runs without touching /etc or /var."""
    servers = " ".join(f"server {address} max_fails=3 fail_timeout=10s;" for address in upstreams)
    site = string.Template(TEMPLATE.read_text()).safe_substitute(
        UPSTREAM_SERVERS=servers,
        STICKY_KEY=sticky_key,
        LISTEN=listen,
        STATIC_ROOT=str(ROOT / "static"),
        VIDEO_TEMP=str(runtime / "video_body"),
    )
    # as root, nginx's workers would drop to "nobody"; a loopback cluster runs them as the caller
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""{user}
worker_processes 1;
pid {runtime}/nginx.pid;
error_log {runtime}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    include {MIME_TYPES};
    access_log off;
    client_body_temp_path {runtime}/client_body;
    proxy_temp_path {runtime}/proxy;
    fastcgi_temp_path {runtime}/fastcgi;
    uwsgi_temp_path {runtime}/uwsgi;
    scgi_temp_path {runtime}/scgi;
{site}
}}
"""


class Cluster:
    """redis-server, `instances` gunicorn instances and nginx in front of them, on free loopback ports.

    Args:
        instances: how many app instances.
        port: nginx's port (default: a free one).
        sticky_key: nginx's upstream hash key. Production pins clients by address ($remote_addr); benchmarks
            whose clients all come from 127.0.0.1 spread them by connection ($remote_addr$remote_port), which
            is sound for WebSocket-only clients: one connection is one whole session.
        env: extra environment for the instances.

    Use as a context manager; `stop()` ends every process it started.
    """

    def __init__(self, instances: int = 2, port: int | None = None, sticky_key: str = "$remote_addr", env=None):
        self.runtime = Path(tempfile.mkdtemp(prefix="moodlens-cluster-"))
        self.redis_port = free_port()
        self.instance_ports = [free_port() for _ in range(instances)]
        self.port = port or free_port()
        self.sticky_key = sticky_key
        self.env = env or {}
        self.redis: subprocess.Popen | None = None
        self.instances: list[subprocess.Popen | None] = []
        self.nginx: subprocess.Popen | None = None
        self._logs: list = []

    @property
    def url(self) -> str:
        """nginx's address: what browsers and clients use."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def message_queue(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def instance_url(self, index: int) -> str:
        """One instance's own address, bypassing nginx."""
        return f"http://127.0.0.1:{self.instance_ports[index]}"

    def _spawn(self, args: list[str], name: str, env=None) -> subprocess.Popen:
        # logs go to files: a pipe nobody reads would fill up and stall the process
        log = open(self.runtime / f"{name}.log", "wb")  # noqa: SIM115  (closed by stop)
        self._logs.append(log)
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def start(self, timeout: float = 120) -> Cluster:
        """Start redis, the instances and nginx; return once nginx answers /healthz.

        Raises:
            RuntimeError: nginx or redis-server is missing, or something did not start.
        """
        try:
            if missing := missing_tools():
                raise RuntimeError(f"not installed: {', '.join(missing)} (apt-get install nginx redis-server)")
            # else nginx retries its bind for seconds and gives up, while whatever holds the port answers /healthz
            if port_in_use(self.port):
                raise RuntimeError(
                    f"port {self.port} is in use on 127.0.0.1: stop what listens there or choose another"
                )
            self.runtime.chmod(0o755)
            self.redis = self._spawn(
                [
                    "redis-server",
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.redis_port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                "redis",
            )
            wait_until(lambda: listens(self.redis_port), self.redis, f"redis listened on {self.redis_port}", 30)
            for index in range(len(self.instance_ports)):
                self.instances.append(self._start_instance(index))
            for index, process in enumerate(self.instances):
                wait_ready(self.instance_url(index) + "/healthz", process, timeout)
            config = self.runtime / "nginx.conf"
            upstreams = [f"127.0.0.1:{port}" for port in self.instance_ports]
            config.write_text(nginx_config(upstreams, f"127.0.0.1:{self.port}", self.runtime, self.sticky_key))
            self.nginx = self._spawn(
                ["nginx", "-p", str(self.runtime), "-c", str(config), "-g", "daemon off;"], "nginx"
            )
            wait_ready(self.url + "/healthz", self.nginx, 30)
            if self.nginx.poll() is not None:  # answered by something else that took the port meanwhile
                raise RuntimeError(f"nginx exited with {self.nginx.returncode}: {self.log('nginx')}")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_instance(self, index: int) -> subprocess.Popen:
        procfile, args = web_process(f"127.0.0.1:{self.instance_ports[index]}")
        env = {**os.environ, **procfile, "TRUSTED_PROXIES": "1", **self.env}
        env.update(MESSAGE_QUEUE=self.message_queue, INSTANCE=f"instance-{index}")
        return self._spawn(args, f"instance-{index}", env)

    def kill_instance(self, index: int) -> None:
        """Kill one instance outright (SIGKILL on gunicorn's master and worker), as a crash would."""
        process = self.instances[index]
        if process is None:
            return
        # the worker first: killed alone, the master would start a new one
        for child in _children(process.pid):
            os.kill(child, signal.SIGKILL)
        process.kill()
        process.wait(10)
        self.instances[index] = None

    def log(self, name: str) -> str:
        """The tail of one process's log ("redis", "nginx", "instance-0", ...)."""
        path = self.runtime / f"{name}.log"
        return path.read_bytes().decode(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        """Stop nginx, the instances and redis (TERM, then KILL), and remove the runtime folder."""
        for process in [self.nginx, *self.instances, self.redis]:
            if process is not None and process.poll() is None:
                process.terminate()
        for process in [self.nginx, *self.instances, self.redis]:
            if process is None:
                continue
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        for log in self._logs:
            log.close()
        shutil.rmtree(self.runtime, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (gunicorn's worker), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--port", type=int, default=8080, help="nginx's port on 127.0.0.1")
    args = parser.parse_args()
    # TERM (a service manager) or HUP (the terminal closed) stop everything, during start-up too: on HUP
    # alone gunicorn and nginx would reload and run on with nothing watching them
    for stop_signal in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(stop_signal) != signal.SIG_IGN:  # started under nohup: HUP stays ignored
            signal.signal(stop_signal, signal.default_int_handler)
    cluster = Cluster(args.instances, args.port)
    try:
        cluster.start()  # stops what it started if it fails or is interrupted
    except RuntimeError as error:
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    try:
        print(f"Moodlens: {cluster.url} (nginx) -> {len(cluster.instance_ports)} instances")
        for index in range(len(cluster.instance_ports)):
            print(f"  instance-{index}: {cluster.instance_url(index)}")
        print(f"  redis: {cluster.message_queue}; logs in {cluster.runtime}; Ctrl-C stops everything")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    finally:
        # a second Ctrl-C (or TERM) while gunicorn stops gracefully must not cut the stop short
        for stop_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(stop_signal, signal.SIG_IGN)
        cluster.stop()


if __name__ == "__main__":
    main()
