"""Hosts as real processes: token authentication, malformed messages, live migration between
two host processes, and a destination that dies at each phase of a migration."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypervisor.encap.wire import HostClient, HostError
from hypervisor.guest.image import load_guest
from hypervisor.vmm.vm import Vm
from vmlab import protocol
from vmlab.cli import main

TOKEN = "a-test-token-0123456789"


class HostProcess:
    def __init__(self, *extra: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vmlab.cli", "host", "serve", *extra],
            stdout=subprocess.PIPE,
            text=True,
            env={"VMLAB_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 60)
        assert ready, "the host did not start"
        self.address = self.process.stdout.readline().split()[-1]

    def client(self) -> HostClient:
        return HostClient(self.address, TOKEN)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def hosts() -> Iterator[list[HostProcess]]:
    started: list[HostProcess] = []
    yield started
    for host in started:
        host.stop()


def wait_until_ended(client: HostClient, vm: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {v["name"]: v for v in client.call("list")[0]["vms"]}[vm]
        if found["state"] not in ("running", "created"):
            return found
        time.sleep(0.05)
    raise AssertionError(f"{vm} did not end")


def whoami_console() -> bytes:
    vm = Vm(load_guest("whoami"), "native")
    vm.run(5_000_000)
    return bytes(vm.console)


def raw(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), 10)


def test_a_host_refuses_commands_without_the_token(hosts: list[HostProcess]) -> None:
    hosts.append(host := HostProcess())
    for hello in ([], [{"op": "hello", "token": "wrong"}]):
        sock = raw(host.address)
        for message in hello:
            protocol.send(sock, message)
            assert protocol.recv(sock)[0] == {"ok": False, "error": "wrong token"}
        if not hello:
            protocol.send(sock, {"op": "list"})
            reply = protocol.recv(sock)[0]
            assert not reply["ok"] and "token" in reply["error"]
        with pytest.raises(ConnectionError):
            protocol.send(sock, {"op": "list"})
            protocol.recv(sock)
    with pytest.raises(HostError, match="wrong token"):
        HostClient(host.address, "wrong")


def test_malformed_messages_never_crash_a_host_or_touch_a_vm(hosts: list[HostProcess]) -> None:
    hosts.append(host := HostProcess())
    client = host.client()
    client.call("create", guest="hog", mode="native", name="hog")
    client.call("pause", vm="hog")
    step = client.call("list")[0]["vms"][0]["step"]
    bad_requests = [
        {"op": "no such op"},
        {"op": "create", "guest": "/etc/passwd", "mode": "native", "name": None},
        {"op": "create", "guest": "hello", "mode": "vmx", "name": None},
        {"op": "console", "vm": "hog", "since": -1},
        {"op": "pause", "vm": "hog", "extra": 1},
        {"op": "mig_pages", "round": 0},
        {"op": "mig_commit"},
        {"op": "receive", "mode": None, "name": None},
        {"op": "destroy", "vm": "nobody"},
        ["not", "an", "object"],
    ]
    for request in bad_requests:
        client.sock.sendall(
            protocol.FRAME.pack(len(text := json.dumps(request).encode()), 0) + text
        )
        reply, _ = protocol.recv(client.sock)
        assert reply["ok"] is False and reply["error"]
    for garbage in (
        b"\xff" * 64,  # lengths over the limits
        protocol.FRAME.pack(3, 0) + b"{{{",  # not JSON: an error, the connection stays
        protocol.FRAME.pack(10, 5) + b'{"op":"li',  # cut short, then the client goes away
    ):
        sock = raw(host.address)
        protocol.send(sock, {"op": "hello", "token": TOKEN})
        protocol.recv(sock)
        sock.sendall(garbage)
        sock.close()
    assert host.alive()
    vms = host.client().call("list")[0]["vms"]
    assert [(v["name"], v["state"], v["step"]) for v in vms] == [("hog", "paused", step)]


def migrate(source: HostProcess, destination: HostProcess, vm: str) -> dict:
    """Resume the paused VM and migrate it in one write: no slice runs between the two."""
    client = source.client()
    frames = protocol.encode({"op": "resume", "vm": vm})
    frames += protocol.encode({"op": "migrate", "vm": vm, "to": destination.address})
    client.sock.sendall(frames)
    assert protocol.recv(client.sock)[0]["ok"]
    reply = protocol.recv(client.sock)[0]
    assert reply["ok"], reply
    return reply["report"]


def paused_whoami(host: HostProcess) -> HostClient:
    client = host.client()
    client.call("create", guest="whoami", mode="native", name="whoami")
    client.call("pause", vm="whoami")
    return client


def test_live_migration_between_host_processes_keeps_the_guests_output(
    hosts: list[HostProcess],
) -> None:
    hosts.extend([source := HostProcess(), destination := HostProcess()])
    paused_whoami(source)
    report = migrate(source, destination, "whoami")
    assert report["migrated"] and len(report["rounds"]) >= 2  # pre-copy, stop and copy
    assert report["rounds"][0]["pages"] > 0 and report["downtime_seconds"] > 0
    assert source.client().call("list")[0]["vms"] == []
    arrived = destination.client()
    assert wait_until_ended(arrived, "whoami")["state"] == "exited"
    assert arrived.call("console", vm="whoami", since=0)[1] == whoami_console()


@pytest.mark.parametrize("phase", ["open", "round-0", "round-1", "commit", "go"])
def test_a_destination_that_dies_leaves_the_vm_running_on_the_source(
    hosts: list[HostProcess], phase: str
) -> None:
    hosts.extend([source := HostProcess(), destination := HostProcess("--fail-at", phase)])
    client = paused_whoami(source)
    report = migrate(source, destination, "whoami")
    assert not report["migrated"] and "gone" in report["failure"]
    assert destination.process.wait(10) == 3  # it died at that phase
    assert wait_until_ended(client, "whoami")["state"] == "exited"
    assert client.call("console", vm="whoami", since=0)[1] == whoami_console()


def test_the_migrate_command_prints_rounds_and_downtime(
    hosts: list[HostProcess], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts.extend([source := HostProcess(), destination := HostProcess()])
    paused_whoami(source)
    monkeypatch.setenv("VMLAB_TOKEN", TOKEN)
    assert main(["migrate", "whoami", "--from", source.address, "--to", destination.address]) == 0
    out = capsys.readouterr().out
    assert "round 0:" in out and "downtime" in out and f"moved to {destination.address}" in out


def test_no_token_file_no_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["host", "list", "127.0.0.1:1", "--token-file", str(tmp_path / "none")]) == 2
    assert "none" in capsys.readouterr().err
