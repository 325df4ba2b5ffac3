"""`vmlab cluster`: N host processes and a manager — placement, balancing, maintenance,
failover from replicated snapshots.

    vmlab cluster --hosts 3 'create timer trap' 'create hog native' 'balance' \\
        'maintenance host-1' 'kill host-2' 'wait' 'status'

The manager (this process) places a new VM on the least-loaded host that is not in
maintenance; `balance` live-migrates VMs off the most loaded host while another has two
fewer; `maintenance HOST` evacuates a host by live migration and takes it out of placement.
Every `--replicate-every` seconds it copies each running VM off its host (`checkpoint`):
when a host process dies, its VMs are restarted on the others from their latest replica, and
what that costs is printed — the guest instructions run since the replica, which the
restarted VM runs again (deterministically: the same output, printed once more from there).
"""

from __future__ import annotations

import os
import secrets
import select
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field

from hypervisor.encap.migration import MigrationFailed
from hypervisor.encap.wire import HostClient, HostError

TICK = 0.05


@dataclass
class HostProcess:
    name: str
    process: subprocess.Popen[str]
    address: str
    maintenance: bool = False
    dead: bool = False


@dataclass
class Replica:
    host: str
    step: int  # the replica's step
    data: bytes
    seen: int = 0  # the last step a list showed


@dataclass
class Cluster:
    hosts: list[HostProcess]
    token: str
    every: float = 0.5
    replicas: dict[str, Replica] = field(default_factory=dict)
    placed: dict[str, str] = field(default_factory=dict)  # VM -> host name
    backups: dict[str, str] = field(default_factory=dict)  # FT pair's VM -> its backup's host
    moving: dict[str, tuple[str, str]] = field(default_factory=dict)  # VM -> (source, target)
    events: list[str] = field(default_factory=list)  # what happened, for watchers
    ended: dict[str, str] = field(default_factory=dict)  # VM -> final state
    _replicated: float = 0.0

    @classmethod
    def start(cls, count: int, every: float, token: str | None = None) -> Cluster:
        token = token or secrets.token_hex(16)
        env = {**os.environ, "VMLAB_TOKEN": token}
        hosts = []
        for number in range(1, count + 1):
            process = subprocess.Popen(
                [sys.executable, "-m", "vmlab.cli", "host", "serve"],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], 60)
            if not ready:
                raise MigrationFailed(f"host-{number} did not start")
            address = process.stdout.readline().split()[-1]
            hosts.append(HostProcess(f"host-{number}", process, address))
        return cls(hosts, token, every)

    def stop(self) -> None:
        for host in self.hosts:
            if host.process.poll() is None:
                host.process.kill()
            host.process.wait(10)

    # ------------------------------------------------------------------ talking to hosts
    def call(self, host: HostProcess, op: str, payload: bytes = b"", **fields: object) -> tuple:
        client = HostClient(host.address, self.token)
        try:
            return client.call(op, payload, **fields)
        finally:
            client.close()

    def host(self, name: str) -> HostProcess:
        for host in self.hosts:
            if host.name == name:
                return host
        raise MigrationFailed(f"no host named {name}")

    def live(self) -> list[HostProcess]:
        return [h for h in self.hosts if not h.dead]

    def load(self, host: HostProcess) -> int:
        return sum(1 for vm, where in self.placed.items() if where == host.name)

    def _least_loaded(self, besides: HostProcess | None = None) -> HostProcess:
        hosts = [h for h in self.live() if not h.maintenance and h is not besides]
        if not hosts:
            raise MigrationFailed("no host can take a VM")
        return min(hosts, key=self.load)

    # ------------------------------------------------------------------ actions
    def create(self, guest: str, mode: str, name: str | None = None) -> str:
        """Names are the cluster's: unique across its hosts (a VM keeps its name as it moves)."""
        host = self._least_loaded()
        base = name = name or guest
        number = 1
        while name in self.placed:
            number += 1
            name = f"{base}-{number}"
        reply, _ = self.call(host, "create", guest=guest, mode=mode, name=name)
        self.placed[reply["vm"]] = host.name
        return self.note(f"{reply['vm']} placed on {host.name} (the least loaded)")

    def fault_tolerant(self, guest: str, mode: str, name: str) -> str:
        """An FT pair: the primary on the least-loaded host, its backup on the next."""
        if name in self.placed:
            raise MigrationFailed(f"a VM named {name!r} is in the cluster already")
        primary = self._least_loaded()
        backup = self._least_loaded(besides=primary)
        self.call(primary, "ft_start", guest=guest, mode=mode, name=name, backup=backup.address)
        self.placed[name], self.backups[name] = primary.name, backup.name
        return self.note(f"{name} runs on {primary.name}, its FT backup on {backup.name}")

    def give(self, vm: str, device: str, text: str) -> str:
        self.call(self.host(self.placed[vm]), "input", vm=vm, device=device, text=text)
        return f"{vm} is given {text!r} ({device})"

    def migrate(self, vm: str, target: HostProcess) -> str:
        source = self.host(self.placed[vm])
        self.moving[vm] = (source.name, target.name)
        try:
            reply, _ = self.call(source, "migrate", vm=vm, to=target.address)
        finally:
            del self.moving[vm]
        report = reply["report"]
        if not report["migrated"]:
            return self.note(f"{vm} stays on {source.name}: {report['failure']}")
        self.placed[vm] = target.name
        rounds = ", ".join(f"{r['pages']}" for r in report["rounds"])
        return self.note(
            f"{vm} {source.name} → {target.name}: {len(report['rounds'])} rounds "
            f"({rounds} pages), downtime {report['downtime_seconds'] * 1000:.1f} ms"
        )

    def note(self, text: str) -> str:
        self.events.append(text)
        return text

    def balance(self) -> list[str]:
        done: list[str] = []
        while True:
            hosts = [h for h in self.live() if not h.maintenance]
            busiest, idlest = max(hosts, key=self.load), min(hosts, key=self.load)
            if self.load(busiest) - self.load(idlest) < 2:
                return done or ["balanced"]
            vm = next(v for v, where in self.placed.items() if where == busiest.name)
            done.append(self.migrate(vm, idlest))

    def maintenance(self, name: str) -> list[str]:
        host = self.host(name)
        host.maintenance = True
        moved = [
            self.migrate(vm, self._least_loaded(host))
            for vm, where in list(self.placed.items())
            if where == name
        ]
        return [*moved, f"{name} is in maintenance: no VM left on it"]

    def kill(self, name: str) -> str:
        host = self.host(name)
        host.process.kill()
        host.process.wait(10)
        return f"{name} killed"

    # ------------------------------------------------------------------ the manager's loop
    def tick(self) -> list[str]:
        """Look at every host: note each VM's step and end, replicate when due, and restart
        the VMs of a host that died."""
        notes: list[str] = []
        replicate = time.monotonic() - self._replicated >= self.every
        for host in self.live():
            try:
                vms = self.call(host, "list")[0]["vms"]
            except HostError:
                raise
            except MigrationFailed:  # it does not answer: dead
                host.dead = True
                notes += self._failover(host)
                continue
            for vm in vms:
                name = vm["name"]
                if name in self.ended or vm.get("role") == "backup":
                    continue
                if vm["state"] not in ("running", "created", "paused"):
                    self.ended[name] = vm["state"]
                    continue
                replica = self.replicas.get(name)
                if replica is not None:
                    replica.seen = vm["step"]
                if replicate:
                    self._replicate(host, name)
        if replicate:
            self._replicated = time.monotonic()
        return notes

    def _replicate(self, host: HostProcess, vm: str) -> None:
        try:
            reply, data = self.call(host, "checkpoint", vm=vm)
        except HostError:
            return  # it ended meanwhile
        except MigrationFailed:
            return  # the host died: the next tick fails it over
        self.replicas[vm] = Replica(host.name, reply["step"], data, reply["step"])

    def _failover(self, dead: HostProcess) -> list[str]:
        notes = [self.note(f"{dead.name} died")]
        for vm, where in list(self.backups.items()):
            if where == dead.name:  # its primary runs on, without fault tolerance
                del self.backups[vm]
                notes.append(self.note(f"{vm} lost its FT backup: it runs on alone"))
        for vm, where in list(self.placed.items()):
            if where != dead.name or vm in self.ended:
                continue
            if vm in self.backups:
                notes.append(self._takeover(vm))
                continue
            replica = self.replicas.get(vm)
            if replica is None:
                notes.append(self.note(f"{vm} is lost: no replica of it yet"))
                del self.placed[vm]
                continue
            target = self._least_loaded()
            self.call(target, "receive", replica.data, mode=None, name=vm)
            self.placed[vm] = target.name
            lost = max(replica.seen - replica.step, 0)
            notes.append(
                self.note(
                    f"{vm} restarted on {target.name} from its replica at step "
                    f"{replica.step:,}: {lost:,} guest instructions run again"
                )
            )
        return notes

    def _takeover(self, vm: str) -> str:
        """The backup went live when its log channel closed: the VM is where it ran."""
        host = self.host(self.backups.pop(vm))
        self.placed[vm] = host.name
        step = next(v["step"] for v in self.call(host, "list")[0]["vms"] if v["name"] == vm)
        return self.note(f"{vm}: FT takeover on {host.name} at step {step:,}, nothing lost")

    def wait(self, timeout: float = 300) -> list[str]:
        notes: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            notes += self.tick()
            if all(vm in self.ended for vm in self.placed):
                return notes
            time.sleep(TICK)
        return [*notes, "timed out waiting for the VMs to end"]

    def watch(self, seconds: float) -> list[str]:
        """Look at the hosts for `seconds` (failing over what dies), as a live cluster does
        while people watch it."""
        notes: list[str] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            notes += self.tick()
            time.sleep(TICK)
        return notes

    def status(self) -> list[str]:
        lines = []
        for host in self.hosts:
            flag = " (dead)" if host.dead else " (maintenance)" if host.maintenance else ""
            lines.append(f"{host.name} {host.address}{flag}")
            if host.dead:
                continue
            for vm in self.call(host, "list")[0]["vms"]:
                lines.append(
                    f"   {vm['name']:<14} {vm['mode']:<6} {vm['state']:<8} step {vm['step']:,}"
                    + _pair_note(vm)
                )
        return lines

    def console(self, vm: str) -> str:
        host = self.host(self.placed[vm])
        return self.call(host, "console", vm=vm, since=0)[1].decode("latin-1")


def _pair_note(vm: dict[str, object]) -> str:
    if vm.get("role") == "primary":
        return f"  FT primary: log {vm['log_rate']:,} bytes/s, backup {vm['lag']:,} steps behind"
    return f"  FT {vm['role']}" if vm.get("role") else ""


ACTIONS = (
    "create GUEST MODE [NAME] | ft GUEST MODE NAME | type VM TEXT | serial VM TEXT | balance"
    " | maintenance HOST | kill HOST | tick | wait | watch SECONDS | status"
    " | console VM"
)


def act(cluster: Cluster, action: str) -> list[str]:
    words = shlex.split(action)
    verb, rest = (words[0], words[1:]) if words else ("", [])
    if verb == "create" and len(rest) in (2, 3):
        return [cluster.create(*rest)]
    if verb == "ft" and len(rest) == 3:
        return [cluster.fault_tolerant(*rest)]
    if verb in ("type", "serial") and len(rest) == 2:
        device = "keyboard" if verb == "type" else "serial"
        return [cluster.give(rest[0], device, rest[1].encode().decode("unicode_escape"))]
    if verb == "balance" and not rest:
        return cluster.balance()
    if verb == "maintenance" and len(rest) == 1:
        return cluster.maintenance(rest[0])
    if verb == "kill" and len(rest) == 1:
        return [cluster.kill(rest[0])]
    if verb == "tick" and not rest:
        return cluster.tick()
    if verb == "wait" and not rest:
        return cluster.wait()
    if verb == "watch" and len(rest) == 1 and rest[0].replace(".", "", 1).isdigit():
        return cluster.watch(float(rest[0]))
    if verb == "status" and not rest:
        return cluster.status()
    if verb == "console" and len(rest) == 1:
        return [cluster.console(rest[0]).rstrip("\n")]
    raise MigrationFailed(f"{action!r}: an action is one of {ACTIONS}")


def run(count: int, every: float, actions: list[str], token: str | None = None) -> int:
    """With a `token`, the manager also answers watchers (the UI's cluster view)."""
    cluster = Cluster.start(count, every, token)
    server = None
    if token is not None:
        from vmlab.clusterserve import ClusterServer

        server = ClusterServer(cluster)
        print(f"cluster listening on {server.address}", flush=True)
    try:
        for action in actions:
            print(f"» {action}")
            for line in act(cluster, action):
                print(f"   {line}")
    finally:
        if server is not None:
            server.close()
        cluster.stop()
    return 0
