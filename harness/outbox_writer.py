"""Writes records to an outbox as the uplink does, for power-loss tests.

    python -m harness.outbox_writer DB

Loops: commit one record through Outbox.add and print "committed <ts_ms>"; then open a
transaction, insert a record, print "open <ts_ms>" and hold the transaction for 50 ms before
rolling it back, so a kill or a file copy can land while a write is in progress.
"""

import sys
import time

from services.tb_uplink.outbox import Outbox

box = Outbox(sys.argv[1])
ts = int(time.time() * 1000) // 2 * 2  # even: committed records get odd stamps
while True:
    ts += 1
    box.add(ts, {"soc": 50.0, "v_pack": 53.1})
    print(f"committed {ts}", flush=True)
    ts += 1
    box.db.execute("BEGIN IMMEDIATE")
    box.db.execute("INSERT INTO outbox (ts_ms, points, payload) VALUES (?, 1, '{}')", (ts,))
    print(f"open {ts}", flush=True)
    time.sleep(0.05)
    box.db.execute("ROLLBACK")
