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
    "gps.fix": m.GpsFix(valid=True, speed_km_h=42.3, course_deg=181.5, lat=52.5, lon=13.4, alt_m=34.0,
                        sats=8, hdop=0.9, fix_quality=1, gps_utc=1764000000.0),
    "gps.link": m.GpsLink(state="down", port="/dev/serial0", errors={"io": 1}, last_ok_ts=None,
                          sentences=10, bad_sentences=1),
    "uplink.status": m.UplinkStatus(connected=False, server="127.0.0.1:1883", queued=12, sent=3,
                                    dropped=0, last_ack_ts=None, error="connection refused"),
}
