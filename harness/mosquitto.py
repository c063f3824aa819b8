"""A private Mosquitto broker on a free loopback port, started and stopped by the test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt

from harness.proc import free_port, wait_for


class Mosquitto:
    def __init__(self, workdir: Path, conf: str = "", persistence: bool = False, tls: dict | None = None):
        if shutil.which("mosquitto") is None:
            raise RuntimeError("mosquitto is not installed; make test installs it (Debian package mosquitto)")
        self.workdir, self.port, self.tls = workdir, free_port(), tls
        workdir.mkdir(parents=True, exist_ok=True)
        lines = [f"listener {self.port} 127.0.0.1", "log_dest stderr", "user root",
                 f"persistence {'true' if persistence else 'false'}", f"persistence_location {workdir}/"]
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
            if tls.get("require_client_cert"):
                lines += ["require_certificate true"]
        if "allow_anonymous" not in conf:
            lines.append("allow_anonymous true")
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n" + conf)
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.log = open(self.workdir / "mosquitto.log", "ab")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=self.log, stderr=self.log)

        def listening():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return self.proc.poll() is not None
        wait_for(listening, 30)
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {(self.workdir / 'mosquitto.log').read_text()[-500:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()


class Collector:
    """A ThingsBoard stand-in's view: every telemetry record and attribute message that arrives."""

    def __init__(self, port: int, client_id: str = "collector", clean: bool = True,
                 username: str | None = None, password: str | None = None, tls: dict | None = None):
        self.records: list[tuple[int, dict]] = []
        self.attributes: list[dict] = []
        self.payloads = 0
        self.telemetry_sizes: list[int] = []  # bytes of each telemetry payload, in arrival order
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(ca_certs=tls["ca"], certfile=tls.get("client_cert"), keyfile=tls.get("client_key"))
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [("v1/devices/me/telemetry", 1), ("v1/devices/me/attributes", 1)])
        self.client.on_message = self._message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _message(self, client, userdata, msg) -> None:
        import json
        payload = json.loads(msg.payload)
        with self._lock:
            self.payloads += 1
            if msg.topic.endswith("telemetry"):
                self.records += [(r["ts"], r["values"]) for r in payload]
                self.telemetry_sizes.append(len(msg.payload))
            else:
                self.attributes.append(payload)

    def snapshot(self) -> list[tuple[int, dict]]:
        with self._lock:
            return list(self.records)

    def has_all(self, stamps) -> bool:
        """Whether a record with every one of these timestamps has arrived (cheap while too few have)."""
        wanted = set(stamps)
        with self._lock:
            if len(self.records) < len(wanted):
                return False
            return wanted <= {ts for ts, _ in self.records}

    def wait_records(self, n: int, timeout: float) -> bool:
        return bool(wait_for(lambda: len(self.snapshot()) >= n, timeout))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def make_certs(directory: Path) -> dict:
    """A test CA, a server certificate for 127.0.0.1/localhost, one for another name, and a client
    certificate, all made with openssl."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=pace test CA")
    for name, san in (("server", "IP:127.0.0.1,DNS:localhost"), ("wrong", "DNS:wrong.example"),
                      ("client", "DNS:car1")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        (directory / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    return {k: str(directory / v) for k, v in {
        "ca": "ca.crt", "cert": "server.crt", "key": "server.key", "wrong_cert": "wrong.crt",
        "wrong_key": "wrong.key", "client_cert": "client.crt", "client_key": "client.key"}.items()}


def wait_broker_gone(port: int, timeout: float = 30) -> bool:
    def gone():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return False
        except OSError:
            return True
    return bool(wait_for(gone, timeout))
