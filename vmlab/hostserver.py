"""`vmlab host serve`: a host as a process — its VMs, its scheduler, their consoles — run by
commands over TCP (docs/host-protocol.md), and the two ends of live migration.

One thread: the host runs its VMs a slice at a time between looks at the sockets, so it keeps
running them while it waits for commands. Clients authenticate with the host's token first;
a malformed frame cuts that client off, a malformed or failing command gets an error reply,
and neither touches a VM or stops the host.
"""

from __future__ import annotations

import hmac
import os
import selectors
import socket
import sys
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from hypervisor.encap import vmfile
from hypervisor.encap.migration import MigrationFailed, Receiver, migrate
from hypervisor.encap.state import capture, restore
from hypervisor.guest.image import load_for_mode, sample_names
from hypervisor.vmm.contract import Mode
from hypervisor.vmm.host import Host
from vmlab import protocol
from vmlab.protocol import ProtocolError

SLICE = 20_000  # guest instructions run between two looks at the sockets
MAX_VM_RAM = 128 << 20
TIMEOUT = 30.0


@dataclass
class _Client:
    sock: socket.socket
    buffer: bytearray = field(default_factory=bytearray)
    authenticated: bool = False
    receiver: Receiver | None = None


class HostServer:
    def __init__(
        self, token: str, bind: str = "127.0.0.1", port: int = 0, fail_at: str | None = None
    ) -> None:
        """`fail_at`: a migration phase (open, round-N, commit, go) at which this process
        dies at once, as a killed host would (for the tests of migration's failures)."""
        self.token = token.encode()
        self.fail_at = fail_at
        self.host = Host(watch_reads=False)
        self.listener = socket.create_server((bind, port))
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.clients: dict[socket.socket, _Client] = {}
        self.stopping = False

    @property
    def address(self) -> str:
        host, port = self.listener.getsockname()[:2]
        return f"{host}:{port}"

    def serve(self) -> None:
        while not self.stopping:
            busy = any(h.runnable for h in self.host.vms.values())
            for key, _ in self.selector.select(timeout=0 if busy else 0.05):
                if key.fileobj is self.listener:
                    self._accept()
                else:
                    self._readable(self.clients[key.fileobj])  # type: ignore[index]
            if busy:
                self.host.run(SLICE)
        for client in list(self.clients.values()):
            self._close(client)
        self.listener.close()

    # ------------------------------------------------------------------ connections
    def _accept(self) -> None:
        sock, _ = self.listener.accept()
        sock.setblocking(True)
        sock.settimeout(TIMEOUT)
        self.clients[sock] = _Client(sock)
        self.selector.register(sock, selectors.EVENT_READ)

    def _close(self, client: _Client) -> None:
        if client.receiver is not None and not client.receiver.started:
            client.receiver.abort()  # a migration that never got its go: nothing lands here
        self.selector.unregister(client.sock)
        del self.clients[client.sock]
        client.sock.close()

    def _readable(self, client: _Client) -> None:
        try:
            data = client.sock.recv(1 << 20)
        except OSError:
            data = b""
        if not data:
            self._close(client)
            return
        client.buffer += data
        while client.sock in self.clients:
            try:
                frame = protocol.split(client.buffer)
            except ProtocolError as err:
                self._reply(client, {"ok": False, "error": str(err)})
                self._close(client)
                return
            if frame is None:
                return
            self._message(client, *frame)

    def _message(self, client: _Client, text: bytes, payload: bytes) -> None:
        try:
            header = protocol.request(text)
        except ProtocolError as err:
            self._reply(client, {"ok": False, "error": str(err)})
            return
        op = header.pop("op")
        if op == "hello":
            ok = hmac.compare_digest(header["token"].encode(), self.token)
            client.authenticated = ok
            self._reply(client, {"ok": ok, **({} if ok else {"error": "wrong token"})})
            if not ok:
                self._close(client)
            return
        if not client.authenticated:
            self._reply(client, {"ok": False, "error": "refused: say hello with the token first"})
            self._close(client)
            return
        self._die_if(op, header)
        try:
            reply, out = getattr(self, f"_op_{op}")(client, payload, **header)
        except Exception as err:  # a command fails alone: the host and its VMs go on
            reply, out = {"ok": False, "error": f"{op}: {err}"}, b""
        self._reply(client, reply, out)

    def _reply(self, client: _Client, header: dict[str, Any], payload: bytes = b"") -> None:
        with suppress(OSError):  # the client is gone; its socket closes when next read
            protocol.send(client.sock, header, payload)

    def _die_if(self, op: str, header: dict[str, Any]) -> None:
        phase = {"mig_open": "open", "mig_commit": "commit", "mig_go": "go"}.get(op)
        if op == "mig_pages":
            phase = f"round-{header['round']}"
        if phase is not None and phase == self.fail_at:
            os._exit(3)

    # ------------------------------------------------------------------ the VMs
    def _vm(self, name: str) -> Any:
        return self.host[name].vm

    def _op_create(
        self, client: _Client, payload: bytes, guest: str, mode: str, name: str | None
    ) -> Any:
        if guest not in sample_names():  # a network request never names a file of the host
            raise ValueError(f"{guest!r} is not a sample guest")
        image = load_for_mode(guest, Mode(mode))
        hosted = self.host.create(image, mode, name=name or guest)
        return {"ok": True, "vm": hosted.name}, b""

    def _op_list(self, client: _Client, payload: bytes) -> Any:
        vms = [
            {"name": h.name, "state": h.state, "mode": h.vm.mode, "step": h.vm.step}
            for h in self.host.vms.values()
        ]
        return {"ok": True, "vms": vms, "address": self.address}, b""

    def _op_console(self, client: _Client, payload: bytes, vm: str, since: int) -> Any:
        console = self._vm(vm).console
        return {"ok": True, "size": len(console)}, bytes(console[since:])

    def _op_pause(self, client: _Client, payload: bytes, vm: str) -> Any:
        self.host.pause(vm)
        return {"ok": True}, b""

    def _op_resume(self, client: _Client, payload: bytes, vm: str) -> Any:
        self.host.resume(vm)
        return {"ok": True}, b""

    def _op_destroy(self, client: _Client, payload: bytes, vm: str) -> Any:
        self.host.destroy(vm)
        return {"ok": True}, b""

    def _op_suspend(self, client: _Client, payload: bytes, vm: str) -> Any:
        """The VM leaves this host as a .vmlab (the reply's payload)."""
        data = vmfile.to_bytes(capture(self._vm(vm)))
        self.host.destroy(vm)
        return {"ok": True}, data

    def _op_checkpoint(self, client: _Client, payload: bytes, vm: str) -> Any:
        """A copy of the VM as a .vmlab (it stays and runs on): a replica for failover."""
        return {"ok": True, "step": self._vm(vm).step}, vmfile.to_bytes(capture(self._vm(vm)))

    def _op_receive(
        self, client: _Client, payload: bytes, mode: str | None, name: str | None
    ) -> Any:
        suspended = vmfile.from_bytes(payload, "the received VM")
        unique = self.host.unique(name or suspended.name)
        vm = restore(suspended, mode, name=unique, host=self.host.ram, events=self.host.events)
        self.host.add(vm)
        return {"ok": True, "vm": vm.name}, b""

    def _op_shutdown(self, client: _Client, payload: bytes) -> Any:
        self.stopping = True
        return {"ok": True}, b""

    # ------------------------------------------------------------------ live migration
    def _op_migrate(self, client: _Client, payload: bytes, vm: str, to: str) -> Any:
        """Pre-copy `vm` to the host at `to`; it leaves this host only once there."""
        hosted = self.host[vm]
        with RemoteDestination(to, self.token.decode()) as destination:
            report = migrate(hosted.vm, destination, self.host.run)
        if report.migrated:
            self.host.destroy(vm)
        return {"ok": True, "report": report.as_json()}, b""

    def _op_mig_open(self, client: _Client, payload: bytes) -> Any:
        receiver = Receiver(MAX_VM_RAM, self.host.ram, self.host.events)
        suspended = vmfile.from_bytes(payload, "the migrating VM")
        receiver.open(payload, name=self.host.unique(suspended.name))
        client.receiver = receiver
        return {"ok": True}, b""

    def _op_mig_pages(self, client: _Client, payload: bytes, round: int) -> Any:
        self._receiver(client).pages(round, payload)
        return {"ok": True}, b""

    def _op_mig_commit(self, client: _Client, payload: bytes) -> Any:
        return {"ok": True, "digest": self._receiver(client).commit(payload)}, b""

    def _op_mig_go(self, client: _Client, payload: bytes) -> Any:
        receiver = self._receiver(client)
        receiver.go()
        assert receiver.vm is not None
        self.host.add(receiver.vm)
        client.receiver = None
        return {"ok": True, "vm": receiver.vm.name}, b""

    def _op_mig_abort(self, client: _Client, payload: bytes) -> Any:
        if client.receiver is not None:
            client.receiver.abort()
            client.receiver = None
        return {"ok": True}, b""

    def _receiver(self, client: _Client) -> Receiver:
        if client.receiver is None:
            raise MigrationFailed("no migration was opened on this connection")
        return client.receiver


class RemoteDestination:
    """The destination host of a migration, over its TCP protocol (the Destination the
    migration engine drives)."""

    def __init__(self, address: str, token: str) -> None:
        self.client = HostClient(address, token)

    def __enter__(self) -> RemoteDestination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def open(self, state: bytes) -> None:
        self.client.call("mig_open", state)

    def pages(self, number: int, data: bytes) -> None:
        self.client.call("mig_pages", data, round=number)

    def commit(self, state: bytes) -> str:
        return str(self.client.call("mig_commit", state)[0]["digest"])

    def go(self) -> None:
        self.client.call("mig_go")

    def abort(self) -> None:
        self.client.call("mig_abort")


class HostError(MigrationFailed):
    """A host refused a command (its reason)."""


class HostClient:
    """A connection to a host, authenticated."""

    def __init__(self, address: str, token: str) -> None:
        host, _, port = address.rpartition(":")
        try:
            self.sock = socket.create_connection((host or "127.0.0.1", int(port)), TIMEOUT)
        except (OSError, ValueError) as err:
            raise MigrationFailed(f"cannot reach the host at {address}: {err}") from None
        self.call("hello", token=token)

    def call(self, op: str, payload: bytes = b"", **fields: Any) -> tuple[dict[str, Any], bytes]:
        try:
            protocol.send(self.sock, {"op": op, **fields}, payload)
            reply, data = protocol.recv(self.sock)
        except (OSError, ProtocolError) as err:
            raise MigrationFailed(f"{op}: the host is gone ({err})") from None
        if not reply.get("ok"):
            raise HostError(str(reply.get("error", "refused")))
        return reply, data

    def close(self) -> None:
        self.sock.close()


def serve(token: str, bind: str, port: int, fail_at: str | None) -> int:
    server = HostServer(token, bind, port, fail_at)
    print(f"host listening on {server.address}", flush=True)
    try:
        server.serve()
    except KeyboardInterrupt:
        print("host stopped", file=sys.stderr)
    return 0
