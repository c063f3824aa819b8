"""Server-side RPC from ThingsBoard: read-only questions answered through the command channel.

ThingsBoard sends ``{"method", "params"}`` on ``v1/devices/me/rpc/request/<id>`` and waits for the
reply on ``v1/devices/me/rpc/response/<id>`` (its default timeout is 10 s; we answer within 1 s:
each service gets CALL_TIMEOUT_S). Every method is read-only; nothing that changes the battery's
state is in the table, so nothing of the kind is reachable from the cloud. An error is answered as
``{"error": "..."}``, naming the service that did not answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common import command

CALL_TIMEOUT_S = 0.3
STATUS_OF = ("bms_reader", "gps_reader", "tb_uplink")

# method -> (service, command): one call through the command channel.
METHODS: dict[str, tuple[str, str]] = {
    "getBmsInfo": ("bms_reader", "info"),
    "getBmsSnapshot": ("bms_reader", "snapshot"),
    "getBmsStatus": ("bms_reader", "status"),
    "getGpsFix": ("gps_reader", "fix"),
    "getGpsStatus": ("gps_reader", "status"),
    "getUplinkStatus": ("tb_uplink", "status"),
    "getOutbox": ("tb_uplink", "outbox"),
    "getTrip": ("trip", "state"),
}


class Rpc:
    def __init__(self, endpoint: Callable[[str], str], local: command.Commands):
        self.endpoint, self.local = endpoint, local

    def _call(self, service: str, cmd: str) -> Any:
        if service == self.local.service:  # our own: no socket round trip to ourselves
            try:
                return self.local.handlers[cmd][0]({})
            except command.CommandError:
                raise
            except Exception as e:  # a handler's bug must not stop the uplink's main thread
                raise command.CommandFailed(f"{type(e).__name__}: {e}") from None
        return command.call(self.endpoint(service), cmd, {}, CALL_TIMEOUT_S, service)

    def answer(self, body: Any) -> dict:
        method = body.get("method") if isinstance(body, dict) else None
        try:
            if method == "getStatus":
                return {s: self._status(s) for s in STATUS_OF}
            if method not in METHODS:
                known = ", ".join(sorted([*METHODS, "getStatus"]))
                return {"error": f"unknown method {method!r}; known: {known}"}
            return {"result": self._call(*METHODS[method])}
        except command.CommandError as e:
            return {"error": str(e)}

    def _status(self, service: str) -> Any:
        try:
            return self._call(service, "status")
        except command.CommandError as e:
            return {"error": str(e)}
