"""The gpsd source: against a small fake gpsd speaking its JSON protocol, and against gpsd itself."""

import json
import os
import shutil
import socket
import threading

import pytest

from common.config import load
from harness.proc import DATA, free_port, python_module, write_config
from tests.gps_reader.test_reader import NmeaSim, one_per_epoch

LOG = DATA / "nmea/garmin15x.log"


class FakeGpsd:
    """Answers like gpsd 3.x: VERSION on connect, DEVICES and WATCH after ?WATCH, then the device's
    NMEA with a TPV report now and then (which a client watching NMEA must skip). The first client
    is cut off after a few sentences, as when gpsd restarts; it is served once ``go`` is set, so
    that the test's subscriber has joined the reader's bus first."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.watch_requests: list[str] = []
        self.sentences = [line for line in LOG.read_text().splitlines() if line.startswith("$")]
        self.clients = 0
        self.go = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.clients += 1
            threading.Thread(target=self._client, args=(conn, self.clients), daemon=True).start()

    def _client(self, conn, number):
        with conn:
            conn.sendall(b'{"class":"VERSION","release":"3.22","rev":"3.22","proto_major":3,"proto_minor":14}\r\n')
            request = conn.recv(4096).decode()
            self.watch_requests.append(request)
            watch = json.loads(request.split("=", 1)[1].rstrip(";\r\n"))
            conn.sendall(b'{"class":"DEVICES","devices":[{"class":"DEVICE","path":"/dev/ttyAMA0","driver":"NMEA0183"}]}\r\n')
            conn.sendall(json.dumps({"class": "WATCH", **watch}).encode() + b"\r\n")
            lines = self.sentences[:10] if number == 1 else self.sentences
            if number == 1:
                self.go.wait(60)
            for i, line in enumerate(lines):
                conn.sendall(line.encode() + b"\r\n")
                if i % 7 == 0:
                    conn.sendall(b'{"class":"TPV","mode":3,"speed":99.0}\r\n')
            if number > 1:
                threading.Event().wait(30)

    def close(self):
        self.server.close()


def test_gpsd_source_against_a_fake_gpsd(spawn, tmp_path, watch):
    gpsd = FakeGpsd()
    try:
        cfg = write_config(tmp_path / "c.yaml", gps_reader={"source": "gpsd", "gpsd_host": "127.0.0.1",
                                                            "gpsd_port": gpsd.port})
        bus = watch([load(cfg).bus.gps_reader], ["gps."])
        reader = spawn(python_module("services.gps_reader", "--config", cfg))
        assert bus.wait_message("gps.link", timeout=60), reader.text()
        gpsd.go.set()
        last_rmc = [line for line in gpsd.sentences if line[3:6] == "RMC"][-1]
        last_second = int(last_rmc.split(",")[1][4:6])
        assert bus.wait_message("gps.fix", lambda m: m.data.gps_utc and int(m.data.gps_utc) % 60 == last_second
                                and gpsd.clients >= 2, 60), reader.text()
        assert '"nmea":true' in gpsd.watch_requests[0] and gpsd.watch_requests[0].startswith("?WATCH=")
        assert gpsd.clients >= 2, "the reader must reconnect after gpsd closed the first connection"
        down = [m for m in bus.messages("gps.link") if m.data.state == "down"]
        assert down and down[0].data.errors.get("io") == 1
        rmc_knots = [float(line.split(",")[7]) for line in gpsd.sentences if line[3:6] == "RMC"]
        fixes = one_per_epoch(m.data for m in bus.messages("gps.fix"))
        speeds = [f.speed_km_h for f in fixes if f.speed_km_h is not None]
        assert speeds[-len(rmc_knots):] == [round(k * 1.852, 3) for k in rmc_knots], "gpsd's TPV speeds are not used"
        assert bus.messages("gps.link")[-1].data.bad_sentences == 0, "gpsd's JSON lines are not bad sentences"
    finally:
        gpsd.close()


def test_gpsd_source_against_the_real_gpsd(spawn, tmp_path, watch):
    binary = shutil.which("gpsd") or ("/usr/sbin/gpsd" if os.path.exists("/usr/sbin/gpsd") else None)
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("gpsd is not installed; make test installs it (Debian package gpsd)")
        pytest.skip("gpsd is not installed (make test installs it)")
    sim = NmeaSim(spawn, tmp_path, "pty", "--start-s", 20)
    port = free_port()
    spawn([binary, "-N", "-n", "-S", port, "-F", tmp_path / "gpsd.sock", sim.link])
    cfg = write_config(tmp_path / "c.yaml", gps_reader={"source": "gpsd", "gpsd_host": "127.0.0.1", "gpsd_port": port})
    bus = watch([load(cfg).bus.gps_reader], ["gps."])
    reader = spawn(python_module("services.gps_reader", "--config", cfg))
    assert bus.wait(lambda w: len([m for m in w.messages("gps.fix") if m.data.speed_km_h]) >= 4, 60), reader.text()
    truth = {e["utc"]: e for e in sim.events("epoch") if e["valid"]}
    # gpsd passes sentences on from when the client watches: the first epoch may lack its RMC (and date).
    dated = [m.data for m in bus.messages("gps.fix") if m.data.speed_km_h and m.data.gps_utc]
    assert len(dated) >= 3
    for fix in dated:
        assert fix.speed_km_h == pytest.approx(truth[fix.gps_utc]["speed_km_h"], abs=0.01)
