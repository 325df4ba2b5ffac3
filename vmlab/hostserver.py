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

from hypervisor.devices.scancodes import typeable
from hypervisor.encap import vmfile
from hypervisor.encap.migration import MigrationFailed, Receiver, migrate
from hypervisor.encap.state import capture, restore
from hypervisor.encap.wire import TIMEOUT, HostClient
from hypervisor.guest.image import GuestImage, kernel_names, load_for_mode, sample_names
from hypervisor.machine.cpu import STATE_FIELDS
from hypervisor.vmm.contract import Mode
from hypervisor.vmm.host import Host, HostedVm
from hypervisor.vmm.inputs import Input, InputDevice, InputScript
from hypervisor.vmm.vm import Vm
from vmlab import ft, protocol
from vmlab.protocol import ProtocolError

VIEW_CONSOLE = 8192  # console bytes a view carries (a UI shows the last lines)
SLICE = 20_000  # guest instructions run between two looks at the sockets
MAX_VM_RAM = 128 << 20


@dataclass
class _Client:
    sock: socket.socket
    buffer: bytearray = field(default_factory=bytearray)
    authenticated: bool = False
    receiver: Receiver | None = None
    backup: str | None = None  # the FT backup VM this connection's log feeds
    round: int = 0  # the pre-copy round of the migration coming in on this connection


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
        self.primaries: dict[str, ft.Primary] = {}  # FT pairs' primaries on this host
        self.backups: dict[str, ft.Backup] = {}  # and backups
        self.stopping = False

    @property
    def address(self) -> str:
        host, port = self.listener.getsockname()[:2]
        return f"{host}:{port}"

    def serve(self) -> None:
        while not self.stopping:
            self._gate_pairs()
            busy = any(h.runnable for h in self.host.vms.values())
            for key, _ in self.selector.select(timeout=0 if busy else 0.05):
                if key.fileobj is self.listener:
                    self._accept()
                else:
                    self._readable(self.clients[key.fileobj])  # type: ignore[index]
            if busy:
                self.host.run(SLICE)
            for primary in list(self.primaries.values()):
                primary.ship()
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
        if client.backup in self.backups:
            self.backups[client.backup].go_live()  # the primary's host is gone: take over
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

    def _image(self, guest: str, mode: str) -> GuestImage:
        if guest not in (*sample_names(), *kernel_names()):  # never a file of the host
            raise ValueError(f"{guest!r} is not a sample guest")
        return load_for_mode(guest, Mode(mode))

    def _op_create(
        self, client: _Client, payload: bytes, guest: str, mode: str, name: str | None
    ) -> Any:
        hosted = self.host.create(self._image(guest, mode), mode, name=name or guest)
        return {"ok": True, "vm": hosted.name}, b""

    def _op_input(self, client: _Client, payload: bytes, vm: str, device: str, text: str) -> Any:
        """An input for the VM, taken when the guest next waits (an FT primary logs it to
        its backup before this reply)."""
        item = Input(InputDevice(device), text)
        if item.device is InputDevice.KEYBOARD and not typeable(text):
            raise ValueError(f"{text[:40]!r}: a character no key of a US keyboard types")
        if item.device is InputDevice.SERIAL and any(ord(c) > 0xFF for c in text):
            raise ValueError(f"{text[:40]!r}: serial input is bytes (latin-1 characters)")
        if vm in self.primaries:
            self.primaries[vm].give(item)
        else:
            self._vm(vm).inputs.add(item)
        return {"ok": True}, b""

    # ------------------------------------------------------------------ FT pairs
    def _interactive(self, guest: str, mode: str, name: str) -> HostedVm:
        """A VM that waits for input when it sleeps with nothing to wake it (it may come)."""
        vm = Vm(
            self._image(guest, mode),
            mode,
            name=self.host.unique(name),
            host=self.host.ram,
            events=self.host.events,
            inputs=InputScript(interactive=True),
        )
        return self.host.add(vm)

    def _op_ft_start(
        self, client: _Client, payload: bytes, guest: str, mode: str, name: str, backup: str
    ) -> Any:
        """Start `name` as the primary of an FT pair whose backup runs on the host at
        `backup` (the same name there, fed by a log channel from this host)."""
        if name in self.host.vms:
            raise ValueError(f"a VM named {name!r} is on this host already")
        channel = HostClient(backup, self.token.decode())
        try:
            channel.call("ft_backup", guest=guest, mode=mode, name=name)
        except MigrationFailed:
            channel.close()
            raise
        hosted = self._interactive(guest, mode, name)
        self.primaries[name] = ft.Primary(hosted, channel, backup)
        return {"ok": True, "vm": name}, b""

    def _op_ft_backup(
        self, client: _Client, payload: bytes, guest: str, mode: str, name: str
    ) -> Any:
        if name in self.host.vms:
            raise ValueError(f"a VM named {name!r} is on this host already")
        hosted = self._interactive(guest, mode, name)
        hosted.budget = 0  # nothing logged yet: the lock-step holds it at its start
        self.backups[name] = ft.Backup(hosted)
        client.backup = name
        return {"ok": True}, b""

    def _op_ft_log(self, client: _Client, payload: bytes) -> Any:
        if client.backup not in self.backups:
            raise ValueError("no FT backup is fed by this connection")
        ft.check_record(payload)
        return {"ok": True, "step": self.backups[client.backup].log(payload)}, b""

    def _gate_pairs(self) -> None:
        for primary in self.primaries.values():
            ft.gate(primary.hosted)
        for backup in self.backups.values():
            ft.gate(backup.hosted, ft.UNLIMITED if backup.live else backup.horizon)

    def _not_paired(self, name: str) -> None:
        if name in self.primaries or name in self.backups:
            raise ValueError(f"{name} is one of an FT pair: it stays where the pair runs")

    def _pair(self, name: str) -> dict[str, Any]:
        pair = self.primaries.get(name) or self.backups.get(name)
        return pair.status() if pair is not None else {"role": ""}

    def _op_list(self, client: _Client, payload: bytes) -> Any:
        vms = [
            {
                "name": h.name,
                "state": h.state,
                "mode": h.vm.mode,
                "step": h.vm.step,
                **self._pair(h.name),
            }
            for h in self.host.vms.values()
        ]
        incoming = [
            {"vm": c.receiver.vm.name, "round": c.round, **c.receiver.progress()}
            for c in self.clients.values()
            if c.receiver is not None and c.receiver.vm is not None
        ]
        return {"ok": True, "vms": vms, "address": self.address, "incoming": incoming}, b""

    def _op_view(self, client: _Client, payload: bytes, vm: str) -> Any:
        """What a UI following the VM shows of it: its CPU, its screen, its console's end."""
        machine = self._vm(vm)
        cpu = machine.executor.guest_cpu()
        screen = machine.screen()
        reply = {
            "ok": True,
            "step": machine.step,
            "registers": dict(zip(STATE_FIELDS, cpu.registers, strict=True)),
            "screen": screen.lines(),
        }
        return reply, bytes(machine.console[-VIEW_CONSOLE:])

    def _op_console(self, client: _Client, payload: bytes, vm: str, since: int) -> Any:
        console = self._vm(vm).console
        if vm in self.primaries:  # output commit: only what the backup could reproduce
            console = console[: self.primaries[vm].committed]
        return {"ok": True, "size": len(console)}, bytes(console[since:])

    def _op_pause(self, client: _Client, payload: bytes, vm: str) -> Any:
        self.host.pause(vm)
        return {"ok": True}, b""

    def _op_resume(self, client: _Client, payload: bytes, vm: str) -> Any:
        self.host.resume(vm)
        return {"ok": True}, b""

    def _op_destroy(self, client: _Client, payload: bytes, vm: str) -> Any:
        self.host.destroy(vm)
        self.primaries.pop(vm, None)
        self.backups.pop(vm, None)
        return {"ok": True}, b""

    def _op_suspend(self, client: _Client, payload: bytes, vm: str) -> Any:
        """The VM leaves this host as a .vmlab (the reply's payload)."""
        self._not_paired(vm)
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
        self._not_paired(vm)
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
        client.round = round
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


def serve(token: str, bind: str, port: int, fail_at: str | None) -> int:
    server = HostServer(token, bind, port, fail_at)
    print(f"host listening on {server.address}", flush=True)
    try:
        server.serve()
    except KeyboardInterrupt:
        print("host stopped", file=sys.stderr)
    return 0
