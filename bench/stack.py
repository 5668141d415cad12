"""Start the whole assistant (Rasa, action server, web chat, delivery) on free ports, for tests and benchmarks."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
MODEL = ROOT / "models" / "coproduction.tar.gz"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    """The running processes and the addresses they answer on."""

    rasa_url: str
    action_url: str
    web_url: str
    data_dir: Path
    processes: Dict[str, subprocess.Popen] = field(default_factory=dict)
    ready_seconds: float = 0.0
    # Every Rasa server's address (the first is rasa_url).
    rasa_urls: List[str] = field(default_factory=list)

    # How each process was started (command, environment), so one can be killed and started again.
    launches: Dict[str, tuple] = field(default_factory=dict)

    def kill(self, name: str, sig: int = 9) -> None:
        """Send sig (default SIGKILL) to one process and its children, and wait for it to go."""
        proc = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def start(self, name: str, timeout: float = 180.0) -> None:
        """Start one process again as it was first started (its log is appended to), and wait until it is ready."""
        command, env = self.launches[name]
        with open(self.data_dir / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        if name == "actions":
            _wait_http(f"{self.action_url}/health", deadline)
        elif name == "web":
            _wait_http(f"{self.web_url}/healthz", deadline)
        elif name.startswith("rasa"):
            index = 0 if name == "rasa" else int(name[4:]) - 1
            _wait_model_loaded(self.rasa_urls[index], deadline)
        else:
            time.sleep(3)  # the delivery process has no port: give it a moment to take its lock

    def rss_mib(self) -> Dict[str, float]:
        """Resident memory of each process (and its children), in MiB."""
        return {name: _tree_rss_kib(proc.pid) / 1024 for name, proc in self.processes.items()}


def _tree_rss_kib(pid: int) -> int:
    """Sum VmRSS of a process and its descendants, read from /proc."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pids.extend(int(c) for c in children)
    return total


def _wait_http(url: str, deadline: float) -> None:
    """Poll url until it answers 2xx or the deadline passes."""
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 300:
                    return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in time")


def _write_endpoints(data_dir: Path, action_port: int, production: Optional[Dict[str, str]] = None) -> Path:
    """An endpoints file pointing at this stack's action server and its SQLite tracker store, or
    (production) a copy of endpoints.production.yml, whose ${...} variables come from the environment."""
    path = data_dir / "endpoints.yml"
    if production is not None:
        path.write_text((ROOT / "endpoints.production.yml").read_text())
        return path
    path.write_text(
        f'action_endpoint:\n  url: "http://127.0.0.1:{action_port}/webhook"\n'
        f"tracker_store:\n  type: components.tracker_store.CachedSQLTrackerStore\n  dialect: sqlite\n  db: {data_dir / 'rasa_tracker.db'}\n"
    )
    return path


@contextlib.contextmanager
def running_stack(
    data_dir: Optional[Path] = None,
    timeout: float = 180.0,
    with_web: bool = True,
    with_delivery: bool = True,
    extra_env: Optional[Dict[str, str]] = None,
    rasa_servers: int = 1,
    production: Optional[Dict[str, str]] = None,
) -> Iterator[Stack]:
    """Start Rasa, the action server and (optionally) the web chat and delivery; stop them all on exit.

    rasa_servers > 1 starts that many Rasa servers on one tracker store; the web chat and Telegram
    take them in turn. production: the variables of endpoints.production.yml (tracker store on
    PostgreSQL, lock store on Redis) plus DATABASE_URL for the app database.
    """
    if not MODEL.exists():
        raise FileNotFoundError(f"{MODEL} is missing: run scripts/train.sh first")
    owned_tmp = None
    if data_dir is None:
        owned_tmp = tempfile.TemporaryDirectory(prefix="coprod-stack-")
        data_dir = Path(owned_tmp.name)
    data_dir.mkdir(parents=True, exist_ok=True)
    rasa_ports = [free_port() for _ in range(max(1, rasa_servers))]
    action_port, web_port = free_port(), free_port()
    endpoints = _write_endpoints(data_dir, action_port, production)
    # Never the real Telegram from a test stack: a token comes only through extra_env.
    env = dict(os.environ, SQLALCHEMY_SILENCE_UBER_WARNING="1", PYTHONPATH=str(ROOT), TELEGRAM_BOT_TOKEN="",
               RASA_TELEMETRY_ENABLED="false")
    env.update(extra_env or {})
    logs: List = []
    rasa_names = ["rasa"] + [f"rasa{i + 1}" for i in range(1, len(rasa_ports))]
    commands = {
        name: [str(VENV_BIN / "python"), "-m", "components.rasa_server", "run", "--model", str(MODEL),
               "--endpoints", str(endpoints), "--credentials", str(ROOT / "credentials.yml"),
               "--interface", "127.0.0.1", "--port", str(port)]
        for name, port in zip(rasa_names, rasa_ports)
    }
    commands["actions"] = [str(VENV_BIN / "python"), "-m", "components.action_server", "--actions", "actions",
                           "--port", str(action_port)]
    database_url = f"sqlite:///{data_dir / 'app.db'}"
    # The web chat and delivery read Rasa's tracker store from the same endpoints file (my data, erasure).
    env.update(DATA_DIR=str(data_dir), DATABASE_URL=database_url, RASA_ENDPOINTS=str(endpoints))
    if production is not None:
        env.update(production)
        env["ACTION_SERVER_URL"] = f"http://127.0.0.1:{action_port}/webhook"
    rasa_urls = [f"http://127.0.0.1:{port}" for port in rasa_ports]
    rasa_url = ",".join(rasa_urls)
    process_env = {
        "actions": {"SANIC_HOST": "127.0.0.1"},
        "web": {"WEB_PORT": str(web_port), "WEB_HOST": "127.0.0.1", "RASA_URL": rasa_url},
        "delivery": {"RASA_URL": rasa_url},
        **{name: {} for name in rasa_names},
    }
    subprocess.run([str(VENV_BIN / "alembic"), "upgrade", "head"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    if with_web:
        commands["web"] = [str(VENV_BIN / "python"), "-m", "bot.web"]
    if with_delivery:
        commands["delivery"] = [str(VENV_BIN / "python"), "-m", "bot.delivery"]
    stack = Stack(
        rasa_url=rasa_urls[0],
        action_url=f"http://127.0.0.1:{action_port}",
        web_url=f"http://127.0.0.1:{web_port}",
        data_dir=data_dir,
        rasa_urls=rasa_urls,
    )
    started = time.monotonic()
    try:
        for name, cmd in commands.items():
            log = open(data_dir / f"{name}.log", "wb")
            logs.append(log)
            stack.launches[name] = (cmd, {**env, **process_env[name]})
            stack.processes[name] = subprocess.Popen(
                cmd, cwd=ROOT, env={**env, **process_env[name]}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = started + timeout
        _wait_http(f"{stack.action_url}/health", deadline)
        for url in stack.rasa_urls:
            _wait_model_loaded(url, deadline)
        if with_web:
            _wait_http(f"{stack.web_url}/healthz", deadline)
        stack.ready_seconds = time.monotonic() - started
        yield stack
    finally:
        for proc in stack.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
        for proc in stack.processes.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
        for log in logs:
            log.close()
        if owned_tmp is not None:
            owned_tmp.cleanup()


def _wait_model_loaded(rasa_url: str, deadline: float) -> None:
    """Rasa answers / before the model is loaded: send a message until a reply comes back."""
    import json

    body = json.dumps({"sender": "readiness-probe", "message": "hello"}).encode()
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            req = urllib.request.Request(
                f"{rasa_url}/webhooks/rest/webhook", data=body,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status == 200 and json.loads(resp.read() or b"[]"):
                    return
        time.sleep(0.3)
    raise TimeoutError("Rasa did not load its model in time")
