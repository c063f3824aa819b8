"""tb_uplink: not implemented yet; it starts on the runner, validates its section and waits."""

from common.service import Service


def main(svc: Service) -> None:
    svc.log.info("started; its real work lands in a later issue")
    while not svc.wait(1.0):
        pass
