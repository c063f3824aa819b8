"""One valid message per topic, as a publisher would send it."""

from common import messages as m

PACK = m.Pack(
    pack=1, cells_mv=[3394, 3348, 3347, 3345], temps_c=[26.9, 27.0, -3.5, 27.5], current_a=-2.25,
    voltage_v=13.434, power_w=-30.23, remaining_ah=47.5, full_ah=50.0, design_ah=50.0, cycles=3,
    soc_pct=95.0, soh_pct=100.0, cell_min_mv=3345, cell_max_mv=3394, cell_delta_mv=49,
    warnings=["cell_high_voltage"], protections=[], faults=[], indicators=["dfet_on", "cfet_on"],
    cell_alarms={1: "high"}, temp_alarms={}, pack_alarms={}, balancing=[1], charge_fet=True,
    discharge_fet=True, status_raw={"warn_1": 1}, reported_soc_pct=None, extra_hex="",
)

SAMPLES: dict[str, m.Data] = {
    "bms.snapshot": m.BmsSnapshot(pack_count=1, packs=[PACK], poll_s=0.31),
    "bms.info": m.BmsInfo(protocol_version="25", address=1, software_version="P16S100A-1812-1.00",
                          bms_serial="216061024400003A", pack_serial=None, pack_count=1),
    "bms.link": m.Link(state="up", port="socket://127.0.0.1:5000", errors={"timeout": 2},
                       last_ok_ts=1764000000.5),
    "bms.config": m.BmsConfig(packs=[m.PackConfig(address=1, read_ts=1764000000.0, settings={
        "cell_overvoltage": {"reserved_1": 1, "cell_overvoltage_alarm_mv": 3600, "cell_overvoltage_protect_mv": 3700,
                             "cell_overvoltage_release_mv": 3380, "cell_overvoltage_delay_ms": 1000},
        "datetime": {"bms_clock": "2026-12-04T01:02:03"}})],
        unsupported=["sleep"]),
    "gps.fix": m.GpsFix(valid=True, speed_km_h=42.3, course_deg=181.5, lat=52.5, lon=13.4, alt_m=34.0,
                        sats=8, hdop=0.9, fix_quality=1, gps_utc=1764000000.0),
    "gps.link": m.GpsLink(state="down", port="/dev/serial0", errors={"io": 1}, last_ok_ts=None,
                          sentences=10, bad_sentences=1),
    "uplink.status": m.UplinkStatus(connected=False, server="127.0.0.1:1883", queued=12, sent=3,
                                    dropped=0, last_ack_ts=None, error="connection refused"),
    "trip.state": m.TripState(distance_km=12.5, energy_out_wh=980.0, energy_in_wh=120.0, wh_per_km=68.8,
                              wh_per_km_recent=71.2, range_km=61.0, time_to_empty_s=5400.0, remaining_wh=4340.0,
                              power_w=-2890.0, trip_started_ts=1764000000.0, laps=3, last_lap_s=97.4,
                              best_lap_s=96.8, total_distance_km=1830.2, total_energy_out_wh=140_000.0,
                              total_energy_in_wh=21_000.0),
}


def uplink_pack(number: int, cells: int = 16) -> m.Pack:
    """A full pack as bms_reader publishes it, with values that tell packs and cells apart."""
    mv = [3300 + number * 10 + i for i in range(cells)]
    return m.Pack(
        pack=number, cells_mv=mv, temps_c=[20.0 + number, 21.5, 22.0, 23.5, 30.1, 18.2], current_a=-12.34 * number,
        voltage_v=sum(mv) / 1000, power_w=round(-12.34 * number * sum(mv) / 1000, 2), remaining_ah=47.5,
        full_ah=98.2, design_ah=100.0, cycles=40 + number, soc_pct=48.37, soh_pct=98.2, cell_min_mv=min(mv),
        cell_max_mv=max(mv), cell_delta_mv=max(mv) - min(mv), warnings=["cell_high_voltage"], protections=[],
        faults=[], indicators=["cfet_on", "dfet_on", "pack_indicate"], cell_alarms={cells: "high"}, temp_alarms={},
        pack_alarms={}, balancing=[2], charge_fet=True, discharge_fet=True,
        status_raw={"protect_1": 0, "protect_2": 0, "instruction": 14, "control": 1, "fault": 0, "balance_1": 2,
                    "balance_2": 0, "warn_1": 1, "warn_2": 0})


UPLINK_SNAPSHOT = m.BmsSnapshot(pack_count=2, packs=[uplink_pack(1), uplink_pack(2)], poll_s=0.9)
UPLINK_FIX = m.GpsFix(valid=True, speed_km_h=42.3, course_deg=181.5, lat=47.3769, lon=8.5417, alt_m=412.3, sats=8,
                      hdop=1.01, fix_quality=1, gps_utc=None)
