"""A stand-in publisher process: ``python -m harness.publish NAME --config C [--period S]``.

Runs on the real service runner as NAME (bms_reader, gps_reader or tb_uplink), binds NAME's
endpoint and publishes the sample message of each of NAME's topics every period.
"""

import sys

from common.messages import TOPICS
from common.service import Service, run
from harness.samples import SAMPLES


def main(svc: Service) -> None:
    pub = svc.publisher()
    topics = [t.name for t in TOPICS.values() if t.publisher == svc.name]
    while True:
        for topic in topics:
            pub.publish(topic, SAMPLES[topic])
        if svc.wait(svc.args.period):
            return


if __name__ == "__main__":
    name = sys.argv.pop(1)
    run(name, main, add_arguments=lambda p: p.add_argument("--period", type=float, default=0.05))
