"""A hostile or broken publisher on a bus endpoint: every consumer survives any body, stays within
its memory, keeps its own period under a flood, and every bind problem is a one-line exit 2."""

import json
import socket

import psutil
import pytest

from common.config import load
from harness.proc import free_port, python_module, wait_for, write_config
from harness.xvfb import Xvfb

# Resident memory each consumer is held to in bench/services.py (tap, a small viewer: 60 MB).
MEMORY_LIMIT_MB = {"tap": 60, "tb_uplink": 80, "gui": 150}


@pytest.fixture
def display():
    x = Xvfb()
    yield x
    x.stop()


def consumer(spawn, tmp_path, name, endpoint, display):
    """tap, tb_uplink or gui subscribed to a gps_reader endpoint where the test's sender sits."""
    cfg = write_config(tmp_path / f"{name}.yaml", bus={"gps_reader": endpoint}, tb_uplink={
        "host": "127.0.0.1", "port": free_port(), "token": "t", "token_env": None,
        "outbox_path": str(tmp_path / "o.db")})
    dump = tmp_path / "dump.json"
    args = {"tap": ("common.tap", "--config", cfg, "--topic", "gps.fix"),
            "tb_uplink": ("services.tb_uplink", "--config", cfg),
            "gui": ("services.gui", "--config", cfg, "--dump", dump)}[name]
    child = spawn(python_module(*args), env={"DISPLAY": display.display})
    if name == "gui":
        assert wait_for(dump.exists, 60), child.text()
    elif name == "tb_uplink":
        assert child.wait_line("tb_uplink running", 60), child.text()
    return child, cfg, dump  # (the sender waits for the consumer's subscription in any case)


def _dump(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


CONSUMERS = ["tap", "tb_uplink", "gui"]


@pytest.mark.parametrize("name", CONSUMERS)
def test_a_body_nested_1000_levels_deep_is_counted_and_the_consumer_runs_on(spawn, tmp_path, display, name):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    child, cfg, dump = consumer(spawn, tmp_path, name, endpoint, display)
    sender = spawn(python_module("harness.raw_sender", endpoint, "deep"))
    assert sender.wait(60) == 0, sender.text()
    assert child.wait_line(r"skipping bad bus message \(depth\)", 60), child.text()
    if name == "gui":
        assert wait_for(lambda: _dump(dump).get("errors") == "1 display errors" and _dump(dump)["speed"] == "42", 60)
    if name == "tap":
        # tap prints the good message sent after the deep one, then goes on waiting.
        assert child.wait_line('"topic":"gps.fix"', 60, tag="out"), child.text()
    assert child.proc.poll() is None, child.text()


def _peak_rss_mb(process: psutil.Process, until) -> float:
    peak = 0.0

    def sample():
        nonlocal peak
        peak = max(peak, process.memory_info().rss / 2**20)
        return until()
    assert wait_for(sample, 120, interval=0.05)
    return peak


@pytest.mark.parametrize("name", CONSUMERS)
def test_10_mb_bodies_keep_every_consumer_within_its_memory(spawn, tmp_path, display, name):
    # 10 MB bodies are refused by ZeroMQ at the socket (over 4x max_message_bytes); 900 kB ones
    # reach the decoder and are counted too_large; the receive queue is bounded in bytes.
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    child, cfg, dump = consumer(spawn, tmp_path, name, endpoint, display)
    process = psutil.Process(child.pid)
    sender = spawn(python_module("harness.raw_sender", endpoint, "huge"))
    assert sender.wait_line("flooding", 60), sender.text()
    counted = child.wait_line(r"skipping bad bus message \(too_large\)", 120)
    assert counted, child.text()
    sent_cpu = psutil.Process(sender.pid)
    # Watch the consumer while the sender spends 6 s of CPU flooding it (its queues fill in well under 1 s).
    peak = _peak_rss_mb(process, lambda: sum(sent_cpu.cpu_times()[:2]) >= 6)
    print(f"{name}: peak resident memory {peak:.0f} MB under 10 MB bodies (limit {MEMORY_LIMIT_MB[name]} MB)")
    assert peak < MEMORY_LIMIT_MB[name], f"{name} grew to {peak:.0f} MB"
    assert child.proc.poll() is None, child.text()


@pytest.mark.parametrize("name", ["tb_uplink", "gui"])
def test_a_flood_of_valid_messages_does_not_stop_the_consumers_own_work(spawn, tmp_path, display, watch, name):
    # Two senders (snapshots and fixes) pack valid messages faster than the consumer can check
    # them, so its queue is never empty: reading "everything waiting" would never end.
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    child, cfg, dump = consumer(spawn, tmp_path, name, endpoint, display)
    bus = watch([load(cfg).bus.tb_uplink], ["uplink.status"]) if name == "tb_uplink" else None
    for where, scenario in ((endpoint, "flood"), (load(cfg).bus.bms_reader, "flood_bms")):
        sender = spawn(python_module("harness.raw_sender", where, scenario))
        assert sender.wait_line("flooding", 60), sender.text()
    if name == "tb_uplink":
        # Its status keeps coming (a drain that never returned starved it).
        assert bus.wait(lambda w: len(w.messages("uplink.status")) >= 5, 120), child.text()
    else:
        # It keeps drawing frames and writing what it shows.
        seen = set()

        def frames():
            try:
                st = dump.stat()
            except OSError:
                return False
            seen.add((st.st_ino, st.st_mtime_ns))
            return len(seen) >= 5
        assert wait_for(frames, 120), child.text()
        assert wait_for(lambda: _dump(dump).get("speed") == "42", 60), "the flood's values are shown"
    assert child.proc.poll() is None


def _one_line_exit_2(child):
    assert child.wait(60) == 2, child.text()
    lines = child.text("err")
    assert len(lines) == 1 and lines[0].startswith("gps_reader: config error: "), lines
    return lines[0]


def test_a_port_in_use_is_a_one_line_exit_2(spawn, tmp_path):
    holder = socket.create_server(("127.0.0.1", 0))
    try:
        port = holder.getsockname()[1]
        for spelling in (f"tcp://127.0.0.1:{port}", f"tcp://localhost:{port}", f"tcp://127.0.0.1:0{port}"):
            cfg = write_config(tmp_path / "c.yaml", bus={"gps_reader": spelling})
            line = _one_line_exit_2(spawn(python_module("services.gps_reader", "--config", cfg)))
            assert f"bus.gps_reader: tcp://127.0.0.1:{port} is in use by another process" in line
    finally:
        holder.close()


def test_a_second_process_on_an_ipc_endpoint_is_refused_and_the_first_keeps_it(spawn, tmp_path):
    endpoint = f"ipc://{tmp_path}/gps.sock"
    cfg = write_config(tmp_path / "c.yaml", bus={"gps_reader": endpoint})
    first = spawn(python_module("harness.publish", "gps_reader", "--config", cfg, "--period", 0.05))
    assert first.wait_line("gps_reader running", 60), first.text()
    second = spawn(python_module("services.gps_reader", "--config", cfg))
    assert f"bus.gps_reader: {endpoint} is in use by another process" in _one_line_exit_2(second)
    tap = spawn(python_module("common.tap", "--config", cfg, "--topic", "gps.fix", "--count", 3, "--timeout", 60))
    assert tap.wait(90) == 0, tap.text()
    assert first.proc.poll() is None


@pytest.mark.parametrize(("endpoint", "names"), [
    ("ipc:///no/such/dir/gps.sock", "the directory /no/such/dir does not exist"),
    ("ipc:///tmp/" + "x" * 120, "a Unix socket path holds 107"),
    ("tcp://127.0.0.1:7399?x=1", "is not tcp://host:port")])
def test_an_endpoint_that_cannot_be_bound_is_a_one_line_exit_2(spawn, tmp_path, endpoint, names):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"bus:\n  gps_reader: '{endpoint}'\n")
    assert names in _one_line_exit_2(spawn(python_module("services.gps_reader", "--config", cfg)))


def test_ipv6_loopback_carries_messages(spawn, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", bus={"gps_reader": f"tcp://[::1]:{free_port()}"})
    spawn(python_module("harness.publish", "gps_reader", "--config", cfg, "--period", 0.05))
    tap = spawn(python_module("common.tap", "--config", cfg, "--topic", "gps.fix", "--count", 3, "--timeout", 60))
    assert tap.wait(90) == 0, tap.text()
    assert len(tap.text("out")) == 3
