"""Real receiver logs replayed through the real gps_reader into the bus, against gpsd's output.

For every epoch in which gpsd reported the receiver's speed (a TPV after the epoch's RMC/VTG),
the speed on the bus must agree with gpsd's (m/s x 3.6) to 0.01 km/h; where gpsd reported no
speed, neither may we. TPVs printed before the epoch's RMC/VTG arrived carry speeds gpsd derived
from positions (41 km/h on a walk in haicom-305N); they are not the receiver's and are not
compared (tests/data/nmea/README.md).
"""

import pytest

from common.config import load
from harness.proc import DATA, free_port, python_module, write_config
from tests.gps_reader.gpsd_chk import runs
from tests.gps_reader.test_reader import one_per_epoch

LOGS = ["bt451", "nl2008u", "haicom-305N", "humminbird-M37", "garmin15x", "nmea-fuzzy-cases"]


@pytest.mark.parametrize("name", LOGS)
def test_replayed_log_speeds_agree_with_gpsd(spawn, tmp_path, watch, name):
    # The simulator replays the log over TCP once the reader has connected, and the reader is
    # started after our subscriber, so no fix is lost to a late subscription.
    port = free_port()
    # The logs were recorded years ago (gpsd keeps them since 2005): their dates are real, not a
    # week-number rollover, so the floor goes back before the first rollover.
    cfg = write_config(tmp_path / "c.yaml", gps_reader={
        "source": "tcp", "tcp_host": "127.0.0.1", "tcp_port": port, "stale_after_s": 1,
        "date_floor": "1999-08-22"})
    bus = watch([load(cfg).bus.gps_reader], ["gps."])
    reader = spawn(python_module("services.gps_reader", "--config", cfg))
    assert bus.wait_message("gps.link", timeout=60), reader.text()
    sim = spawn(python_module("sim.nmea", "--tcp", port, "--replay", DATA / f"nmea/{name}.log",
                              "--speed", 50, "--baud", 0))
    replayed = sim.wait_line(r'"event": "replayed", "sentences": (\d+)', 120)
    assert replayed, sim.text()
    # The link goes down once no epoch has come for stale_after_s, after the last epoch was
    # published; a stall of the machine during the replay can do that too, but then not every
    # sentence has been read yet.
    sent = int(replayed.group(1))
    done = bus.wait_message("gps.link", lambda m: m.data.state == "down" and m.data.sentences == sent, 60)
    assert done is not None, (sent, [m.data for m in bus.messages("gps.link")[-2:]], reader.text()[-5:])
    fixes = one_per_epoch(m.data for m in bus.messages("gps.fix"))
    dated = [f for f in fixes if f.gps_utc is not None]
    assert dated, "no fix carried the receiver's time"

    used: set[int] = set()
    compared = 0
    for run in runs(DATA / f"nmea/{name}.log.chk"):
        if run.time is None:
            continue
        match = next((i for i, f in enumerate(dated) if i not in used and abs(f.gps_utc - run.time) < 0.0005), None)
        if run.speed_km_h is None:
            assert match is None or dated[match].speed_km_h is None, f"speed where gpsd has none at {run.time}"
        elif run.from_receiver:
            assert match is not None, f"no fix for the epoch at {run.time}"
            assert dated[match].speed_km_h == pytest.approx(run.speed_km_h, abs=0.01), run
            compared += 1
        if match is not None:
            used.add(match)
    assert compared >= 5
    for fix in fixes:
        if not fix.valid:
            assert fix.speed_km_h is None and fix.lat is None
    link = bus.messages("gps.link")[-1].data
    assert link.bad_sentences == 0 and link.sentences > 0
