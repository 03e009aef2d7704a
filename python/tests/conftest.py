"""A real ``oda-node`` for the tests: one node whose own worker runs its jobs
(one machine is a mesh too), with the example workflows added."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from oda_mesh import Mesh

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "workflows"
START_DEADLINE = 60.0


def node_binary() -> Path:
    path = Path(os.environ.get("ODA_NODE_BIN", REPO / "target" / "debug" / "oda-node"))
    if not path.is_file():
        pytest.fail(f"{path} is missing: build it first (cargo build -p oda-node) or set ODA_NODE_BIN")
    return path


@pytest.fixture(scope="session")
def node(tmp_path_factory):
    data = tmp_path_factory.mktemp("node")
    binary = node_binary()
    subprocess.run([binary, "init", "--data-dir", data], check=True, capture_output=True)
    (data / "config.toml").write_text(
        f'network = "pytest-{os.getpid()}"\n'
        'listen = ["/ip4/127.0.0.1/tcp/0"]\n'
        "[api]\n"
        'listen = "127.0.0.1:0"\n'
        "[worker]\n"
        "enabled = true\n"
        "slots = 2\n"
    )
    log = open(data / "node.log", "wb")
    process = subprocess.Popen(
        [binary, "run", "--data-dir", data], stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + START_DEADLINE
    while not (data / "api.addr").exists():
        if process.poll() is not None:
            pytest.fail(f"oda-node exited at start:\n{(data / 'node.log').read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"oda-node did not write api.addr in {START_DEADLINE} s")
        time.sleep(0.05)
    try:
        yield data
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="session")
def mesh(node) -> Mesh:
    m = Mesh(node)
    for name in ("events", "lightcurve"):
        m.add_workflow(EXAMPLES / name)
    return m
