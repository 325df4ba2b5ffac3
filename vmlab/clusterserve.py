"""A cluster's manager answering watchers (`vmlab tui --cluster ADDRESS`): the hosts, their
VMs and load, migrations in progress, and what happened, over the host protocol's frames.

A thread of the manager's process, beside the one that drives the cluster: while that one
waits for a migration (the source host answers no one until it ends), this one still
answers, from the destination's progress and from what the hosts last said.
"""

from __future__ import annotations

import hmac
import socket
import threading
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from hypervisor.encap.migration import MigrationFailed
from hypervisor.encap.wire import ProtocolError, send, split
from vmlab import protocol

if TYPE_CHECKING:
    from vmlab.cluster import Cluster

EVENTS_SHOWN = 50


class ClusterServer:
    def __init__(self, cluster: Cluster, port: int = 0) -> None:
        self.cluster = cluster
        self.listener = socket.create_server(("127.0.0.1", port))
        self.seen: dict[str, dict[str, Any]] = {}  # VM -> what its host last said of it
        self.views: dict[str, tuple[dict[str, Any], bytes]] = {}
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        host, port = self.listener.getsockname()[:2]
        return f"{host}:{port}"

    def close(self) -> None:
        self.listener.close()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return  # closed: the cluster stops
            threading.Thread(target=self._client, args=(sock,), daemon=True).start()

    def _client(self, sock: socket.socket) -> None:
        with sock, suppress(OSError, ProtocolError):
            sock.settimeout(60)
            buffer, authenticated = bytearray(), False
            while True:
                frame = split(buffer)
                if frame is None:
                    chunk = sock.recv(1 << 16)
                    if not chunk:
                        return
                    buffer += chunk
                    continue
                try:
                    header = protocol.request(frame[0])
                except ProtocolError as err:
                    send(sock, {"ok": False, "error": str(err)})
                    continue
                op = header.pop("op")
                if op == "hello":
                    token = self.cluster.token.encode()
                    authenticated = hmac.compare_digest(header["token"].encode(), token)
                if not authenticated:
                    send(sock, {"ok": False, "error": "refused: say hello with the token first"})
                    return
                if op == "hello":
                    send(sock, {"ok": True})
                elif op == "cluster":
                    send(sock, {"ok": True, **self.state()})
                elif op == "view":
                    send(sock, *self.view(header["vm"]))
                else:
                    send(sock, {"ok": False, "error": f"{op}: not an op of a cluster"})

    def state(self) -> dict[str, Any]:
        cluster = self.cluster
        moving = dict(cluster.moving)
        busy = {source for source, _ in moving.values()}
        hosts, migrations = [], []
        for host in cluster.hosts:
            hosts.append(
                {
                    "name": host.name,
                    "address": host.address,
                    "state": "dead" if host.dead else "maintenance" if host.maintenance else "up",
                    "load": cluster.load(host),
                }
            )
            if host.dead or host.name in busy:
                continue
            with suppress(MigrationFailed):
                reply = cluster.call(host, "list")[0]
                for vm in reply["vms"]:
                    if vm.get("role") != "backup":
                        self.seen[vm["name"]] = vm
                for incoming in reply["incoming"]:
                    source = moving.get(incoming["vm"], ("?", ""))[0]
                    migrations.append({**incoming, "source": source, "target": host.name})
        vms = [
            {
                **self.seen.get(name, {"name": name}),
                "host": where,
                "backup": cluster.backups.get(name, ""),
            }
            for name, where in sorted(cluster.placed.items())
        ]
        return {
            "hosts": hosts,
            "vms": vms,
            "migrations": migrations,
            "events": cluster.events[-EVENTS_SHOWN:],
        }

    def view(self, vm: str) -> tuple[dict[str, Any], bytes]:
        cluster = self.cluster
        where = cluster.placed.get(vm)
        if where is None:
            return {"ok": False, "error": f"no VM named {vm!r} in the cluster"}, b""
        busy = {source for source, _ in dict(cluster.moving).values()}
        if where not in busy:
            with suppress(MigrationFailed):
                reply, console = cluster.call(cluster.host(where), "view", vm=vm)
                self.views[vm] = ({**reply, "host": where}, console)
        return self.views.get(vm, ({"ok": False, "error": f"{vm} is not in view yet"}, b""))
