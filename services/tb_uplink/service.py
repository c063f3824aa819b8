"""tb_uplink: the latest bus values become ThingsBoard telemetry, delivered from a durable outbox.

The main thread subscribes to bms.snapshot, bms.info, bms.config (both as client attributes)
and gps.fix; every ``upload_interval`` it builds one record (records.py) and commits it to the
outbox (outbox.py) before anything else happens to it; every second it publishes uplink.status. The sender thread (sender.py) drains
the outbox over MQTT. Neither waits for the other: an outage only makes the queue grow.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from common import config as configmod
from common import fields, messages
from common.clock import Clock, ntp_synced
from common.command import CommandError
from common.health import Every
from common.service import Service
from services.tb_uplink import budget, limits
from services.tb_uplink.outbox import OutboxError
from services.tb_uplink.records import RecordMaker
from services.tb_uplink.rpc import Rpc
from services.tb_uplink.sender import Sender
from services.tb_uplink.settings import RemoteSettings, table
from services.tb_uplink.shaping import Shaper, split
from services.tb_uplink.storage import Gate, Storage

SIOCGIFADDR = 0x8915


def software_version() -> str:
    try:
        return importlib.metadata.version("pace-telemetry")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def host_addresses(server: str) -> dict[str, str]:
    """The IP address this host uses towards ``server`` and that interface's MAC (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((server, 9))
            ip = probe.getsockname()[0]
    except OSError:
        return {}
    out = {"host_ip": ip}
    for iface in Path("/sys/class/net").iterdir():
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", iface.name[:15].encode()))
            if socket.inet_ntoa(packed[20:24]) == ip:
                out["host_mac"] = (iface / "address").read_text().strip()
                break
        except OSError:
            continue
    return out


def base_attributes(host: str) -> dict:
    """The client attributes of this car and its software, sent on every connect."""
    return {"software_version": software_version(), **host_addresses(host)}


def info_attributes(info: messages.BmsInfo) -> dict:
    """The client attributes from a bms.info (unknown ones left out)."""
    return {k: v for k, v in (("bms_software_version", info.software_version), ("bms_serial", info.bms_serial),
                              ("pack_serial", info.pack_serial), ("pack_count", info.pack_count),
                              ("bms_clock_drift_s", info.clock_drift_s)) if v is not None}


def config_attributes(config: messages.BmsConfig, pad_packs: int) -> dict:
    """The client attributes from a bms.config: every setting, and what the firmware refused."""
    out = fields.setting_attributes(config.packs, pad_packs)
    if config.unsupported:
        out["bms_unsupported_commands"] = ",".join(config.unsupported)
    return out


def check_credentials(cfg: configmod.TbUplinkConfig) -> None:
    """Stop at start when no credentials can be found at all (exit 2, one line). The line names
    the keys, never their values: a token is often pasted into the wrong one."""
    for key in ("token_file", "password_file"):
        path = getattr(cfg, key)
        if path:
            configmod.read_small_file(path, f"tb_uplink.{key}", show_path=False)
    if cfg.auth == "token" and not configmod.read_secret(cfg.token, cfg.token_env, cfg.token_file):
        where = ("tb_uplink.token_file (the file is empty)" if cfg.token_file else
                 "tb_uplink.token, or the environment variable tb_uplink.token_env names" if cfg.token_env
                 else "tb_uplink.token")
        raise configmod.ConfigError(f"tb_uplink.token: no ThingsBoard access token; set {where}")
    if cfg.auth == "basic" and not cfg.username:
        raise configmod.ConfigError("tb_uplink.username: auth is basic but no username is set")


class Uplink:
    def __init__(self, svc: Service):
        self.svc = svc
        self.cfg = cfg = svc.section
        self.gate = Gate()
        try:
            self.storage = Storage(cfg.outbox_path, cfg.outbox_max_rows, cfg.outbox_max_age_days * 86400,
                                   svc.log, self.gate, keep_s=cfg.thinned_keep_days * 86400)
        except OutboxError as e:
            raise configmod.ConfigError(f"tb_uplink.outbox_path: {e}") from None
        self.pub = svc.publisher()
        self.sub = svc.subscriber(["bms.snapshot", "bms.info", "bms.config", "gps.fix", "trip.state"])
        self.clock = Clock(synced={"auto": ntp_synced, "trusted": lambda: True,
                                   "untrusted": lambda: False}[cfg.system_clock])
        self.records = RecordMaker(cfg.max_value_age_s, cfg.zero_pad_number_cells, cfg.zero_pad_number_packs,
                                   cfg.key_set == "full")
        self.stop = threading.Event()
        self.remote = RemoteSettings(table(budget.GROUP_NAMES), {
            "upload_interval": cfg.upload_interval, "key_set": cfg.key_set,
            **{f"cadence_{g}_s": None for g in budget.GROUP_NAMES}})
        self.shaper = Shaper(plan(cfg), cfg.drive_hours_per_month)
        self.interval = cfg.upload_interval
        self.next_record = time.monotonic() + self.interval
        self.sender = Sender(cfg, self._reload, self.stop, self.gate, shared_keys=self.remote.keys)
        self.sender.set_shape(self.shaper.shape, self.shaper.commit, self.shaper.reduced)
        svc.commands.add("outbox", self._outbox_figures, "queued, oldest age, dropped, dead letters, outbox state, kept")
        self.rpc = Rpc(svc.config.bus.command_endpoint, svc.commands)
        self.status_every = Every(1.0)
        self.base_attributes = base_attributes(cfg.host)
        self.info_attributes: dict = {}
        self.config_attributes: dict = {}
        self._attributes()

    def _reload(self) -> configmod.TbUplinkConfig:
        return configmod.load(self.svc.args.config).tb_uplink

    def run(self) -> None:
        self.sender.start()
        try:
            while not self.svc.stopping:
                msg = self.sub.recv(0.1)
                if msg is not None:
                    self._take(msg)
                    for latest in self.sub.drain().values():
                        self._take(latest)
                self._from_server()
                if time.monotonic() >= self.next_record:
                    self.next_record = max(self.next_record + self.interval, time.monotonic())
                    self._record()
                if self.status_every.due():
                    self.storage.tick()
                    self._status()
        finally:
            self.stop.set()
            self.sender.join(1.0)
            self.storage.close()

    def _take(self, msg: messages.Message) -> None:
        self.records.take(msg)
        if msg.topic == "gps.fix":
            self.clock.observe_fix(msg)
        elif msg.topic == "bms.info":
            self.info_attributes = info_attributes(msg.data)
            self._attributes()
        elif msg.topic == "bms.config":
            self.config_attributes = config_attributes(msg.data, self.cfg.zero_pad_number_packs)
            self._attributes()

    def _attributes(self) -> None:
        self.sender.set_attributes({**self.base_attributes, **self.info_attributes, **self.config_attributes,
                                    **self.remote.attributes()})

    def _from_server(self) -> None:
        """Shared attribute updates and server-side RPC requests the sender thread received."""
        while True:
            try:
                kind, *rest = self.sender.inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "settings":
                self._settings(*rest)
            elif kind == "rpc":
                request_id, body = rest
                self.sender.send(f"v1/devices/me/rpc/response/{request_id}", json.dumps(self.rpc.answer(body)))

    def _outbox_figures(self, args: dict) -> dict:
        """From the latest uplink.status: the command thread must not touch the outbox's connection."""
        status = self.svc.commands.latest.get("uplink.status")
        if status is None:
            raise CommandError("no uplink.status published yet")
        return {k: getattr(status, k) for k in ("queued", "oldest_queued_age_s", "dropped", "dead_letters",
                                                 "outbox_state", "sent", "thinned", "kept")}

    def _settings(self, update, full: bool) -> None:
        refused = dict(self.remote.refused)
        changed = self.remote.take(update, full)
        for key, value in changed.items():
            self.svc.log.info("remote setting %s: %r now in use", key, value)
        for key, why in self.remote.refused.items():
            if refused.get(key) != why:
                self.svc.log.warning("remote setting refused: %s", why)
        if "upload_interval" in changed:
            self.interval = changed["upload_interval"]
            self.next_record = min(self.next_record, time.monotonic() + self.interval)
        if "key_set" in changed:
            self.records.full = changed["key_set"] == "full"
        self._attributes()

    def _periods(self) -> dict[str, float | None]:
        return {g: self.remote.in_use.get(f"cadence_{g}_s") for g in budget.GROUP_NAMES}

    def _record(self) -> None:
        record = self.records.make()
        if record is None:
            return
        ts, values = record
        ts_ms = int(round(self.clock.stamp(ts) * 1000))  # ts passed the bus's range check
        self.shaper.plan_for(values, self.interval, self._periods())
        for part in split(values, self.sender.limits.max_points()):
            if self.storage.add(ts_ms, part) and self.svc.config.debug_output2 >= 2:
                self.svc.log.info("record ts=%d %s", ts_ms, msgspec.json.encode(part).decode())

    def _status(self) -> None:
        queued, oldest_ms, dropped, dead, kept = self.storage.stats()
        sender = self.sender
        self.pub.publish("uplink.status", messages.UplinkStatus(
            connected=sender.connected, server=sender.server, queued=queued, sent=sender.sent, dropped=dropped,
            last_ack_ts=sender.last_ack_ts, error=self.storage.problem or sender.error,
            oldest_queued_age_s=None if oldest_ms is None else round(time.time() - oldest_ms / 1000, 1),
            dead_letters=dead, kept=kept, clock_source=self.clock.source, clock_reason=self.clock.reason,
            rate_limits=sender.limits.description, outbox_state=self.storage.state, **self._budget_status()))

    def _budget_status(self) -> dict:
        cadence = self.shaper.cadence
        if cadence is None:
            return {}
        return {"budget": cadence.describe(), "forecast_points_per_hour": cadence.forecast_points_per_hour,
                "monthly_budget_lasts_h": cadence.monthly_budget_lasts_h,
                "points_sent_last_hour": self.sender.points_last_hour(), "thinned": self.sender.thinned}


def plan(cfg: configmod.TbUplinkConfig) -> budget.Plan:
    if cfg.rate_limits != "custom":
        return budget.PLANS[cfg.rate_limits]
    return budget.plan_from_limits(limits.preset("custom", cfg.budget_points_per_hour),
                                   cfg.budget_points_per_month, cfg.budget_messages_per_month)


def prepare(svc: Service) -> Callable[[], None]:
    """Open the outbox and the sockets before the service says it is running (see common.service.run)."""
    return Uplink(svc).run
