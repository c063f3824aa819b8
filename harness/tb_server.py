"""ThingsBoard's server side of a device session, played on a real broker by a second client.

It keeps the device's shared attributes and answers the device's attribute requests with them
(``v1/devices/me/attributes/request/<id>`` -> ``.../response/<id>`` ``{"shared": {...}}``), pushes
a changed shared attribute on ``v1/devices/me/attributes`` the way ThingsBoard does, sends
server-side RPC requests and collects their responses, and keeps the client attributes the
device publishes. It never answers the device's own client RPC (getSessionLimits).
"""

from __future__ import annotations

import itertools
import json
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from harness.proc import wait_for

ATTRIBUTES = "v1/devices/me/attributes"


class TbServer:
    def __init__(self, port: int, shared: dict | None = None):
        self.shared = dict(shared or {})
        self.requests: list[dict] = []       # attribute requests, in arrival order
        self.client_attributes: dict = {}    # the device's client attributes, merged
        self.rpc_replies: dict[str, object] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tb-server", protocol=mqtt.MQTTv5)
        self.client.on_connect = self._subscribe
        self.client.on_message = self._message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert wait_for(self.client.is_connected, 30)

    def _subscribe(self, client, userdata, flags, rc, properties) -> None:
        local = SubscribeOptions(qos=1, noLocal=True)
        client.subscribe([(ATTRIBUTES, local), (ATTRIBUTES + "/request/+", local),
                          ("v1/devices/me/rpc/response/+", local)])

    def _message(self, client, userdata, msg) -> None:
        body = json.loads(msg.payload)
        with self._lock:
            if msg.topic.startswith(ATTRIBUTES + "/request/"):
                self.requests.append(body)
                reply = {"shared": dict(self.shared)}
                client.publish(msg.topic.replace("/request/", "/response/"), json.dumps(reply), qos=1)
            elif msg.topic == ATTRIBUTES:
                self.client_attributes.update(body)
            else:
                self.rpc_replies[msg.topic.rsplit("/", 1)[1]] = body

    def set_shared(self, **values) -> None:
        """Change shared attributes as a user would in the UI: kept, and pushed to the device."""
        with self._lock:
            self.shared.update(values)
        self.client.publish(ATTRIBUTES, json.dumps(values), qos=1)

    def rpc(self, method: str, params: dict | None = None, timeout: float = 60) -> object:
        """A server-side RPC: the device's response body, or None if none came."""
        request_id = str(next(self._ids))
        self.client.publish(f"v1/devices/me/rpc/request/{request_id}",
                            json.dumps({"method": method, "params": params or {}}), qos=1)
        if not wait_for(lambda: request_id in self.rpc_replies, timeout):
            return None
        return self.rpc_replies[request_id]

    def attribute(self, key: str):
        with self._lock:
            return self.client_attributes.get(key)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
