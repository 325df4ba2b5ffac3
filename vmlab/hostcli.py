"""The host commands: run a host process, command it, migrate VMs between hosts.

    vmlab host serve [--port N] [--bind ADDRESS] --token-file FILE
    vmlab host create ADDRESS GUEST [--mode M] [--name NAME]
    vmlab host list ADDRESS         vmlab host console ADDRESS VM      vmlab host stop ADDRESS
    vmlab migrate VM --from ADDRESS --to ADDRESS [--json]

Every host of a user shares one token: VMLAB_TOKEN, or the file --token-file names (`serve`
writes a new random one there, readable by its owner only, when there is none).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from hypervisor.encap.migration import MigrationFailed
from hypervisor.encap.wire import HostClient
from hypervisor.vmm.contract import Mode
from vmlab import cluster, hostserver

ERRORS = (MigrationFailed,)
LIST_AND_STOP = (("list", "the host's VMs"), ("stop", "stop the host"))


def add_parsers(
    sub: Any, mode: Callable[[str], Mode]
) -> dict[str, Callable[[argparse.Namespace], int]]:
    host = sub.add_parser("host", help="run a host process, or command one")
    verbs = host.add_subparsers(dest="verb", required=True)
    serve = verbs.add_parser("serve", help="run a host (TCP, 127.0.0.1 unless --bind)")
    serve.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    serve.add_argument("--bind", default="127.0.0.1", help="the address to listen on")
    serve.add_argument("--fail-at", help=argparse.SUPPRESS)  # tests: die at a migration phase
    create = verbs.add_parser("create", help="create a VM of a sample guest on a host")
    create.add_argument("address")
    create.add_argument("guest")
    create.add_argument("--mode", type=mode, default=Mode.NATIVE)
    create.add_argument("--name")
    plain = [verbs.add_parser(verb, help=text) for verb, text in LIST_AND_STOP]
    for parser in plain:
        parser.add_argument("address")
    console = verbs.add_parser("console", help="what a VM of the host has printed")
    console.add_argument("address")
    console.add_argument("vm")
    mig = sub.add_parser("migrate", help="live-migrate a VM from one host to another (pre-copy)")
    mig.add_argument("vm")
    mig.add_argument("--from", dest="source", required=True, metavar="ADDRESS")
    mig.add_argument("--to", required=True, metavar="ADDRESS")
    mig.add_argument("--json", action="store_true")
    cl = sub.add_parser(
        "cluster",
        help="N host processes and a manager: placement, balancing, maintenance, failover",
        description=f"Each action is one argument: {cluster.ACTIONS}.",
    )
    cl.add_argument("action", nargs="+")
    cl.add_argument("--hosts", type=int, default=3)
    cl.add_argument(
        "--replicate-every", type=float, default=0.5, metavar="S", help="seconds between replicas"
    )
    cl.add_argument(
        "--listen", action="store_true", help="answer watchers (`vmlab tui --cluster ADDRESS`)"
    )
    for parser in (serve, create, console, mig, cl, *plain):
        parser.add_argument("--token-file", metavar="FILE", help="the hosts' shared token")
    return {"host": _host, "migrate": _migrate, "cluster": _cluster}


def _cluster(args: argparse.Namespace) -> int:
    if not 1 <= args.hosts <= 16:
        raise MigrationFailed("a cluster has 1 to 16 hosts")
    shared = token(args, create=True) if args.listen else None
    return cluster.run(args.hosts, args.replicate_every, args.action, shared)


def watch_cluster(args: argparse.Namespace) -> int:
    """`vmlab tui --cluster ADDRESS`: the cluster view of a live cluster."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("vmlab: the UI needs a terminal", file=sys.stderr)
        return 2
    from hypervisor.encap.clusterwatch import ClusterWatch
    from tui.cluster import run_cluster_app  # Textual is loaded only for the UI

    watch = ClusterWatch(args.cluster, token(args))
    try:
        run_cluster_app(watch.poll, args.cluster)
    finally:
        watch.close()
    return 0


def token(args: argparse.Namespace, create: bool = False) -> str:
    if os.environ.get("VMLAB_TOKEN"):
        return os.environ["VMLAB_TOKEN"]
    if not args.token_file:
        raise MigrationFailed("no token: set VMLAB_TOKEN or give --token-file FILE")
    path = Path(args.token_file)
    if not path.exists() and create:
        with suppress(FileExistsError):  # another host of the same user made it just now
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, secrets.token_hex(16).encode())
            os.close(fd)
    try:
        return path.read_text().strip()
    except OSError as err:
        raise MigrationFailed(f"{path}: {err.strerror}") from None


def _host(args: argparse.Namespace) -> int:
    if args.verb == "serve":
        return hostserver.serve(token(args, create=True), args.bind, args.port, args.fail_at)
    client = HostClient(args.address, token(args))
    try:
        if args.verb == "create":
            reply, _ = client.call("create", guest=args.guest, mode=args.mode, name=args.name)
            print(reply["vm"])
        elif args.verb == "list":
            reply, _ = client.call("list")
            for vm in reply["vms"]:
                print(f"{vm['name']:<16} {vm['mode']:<6} {vm['state']:<9} step {vm['step']:,}")
        elif args.verb == "console":
            _, data = client.call("console", vm=args.vm, since=0)
            sys.stdout.write(data.decode("latin-1"))
        else:
            client.call("shutdown")
    finally:
        client.close()
    return 0


def _migrate(args: argparse.Namespace) -> int:
    client = HostClient(args.source, token(args))
    try:
        reply, _ = client.call("migrate", vm=args.vm, to=args.to)
    finally:
        client.close()
    report = reply["report"]
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if report["migrated"] else 1
    for r in report["rounds"]:
        print(
            f"   round {r['number']}: {r['pages']:>6} pages  {r['bytes']:>10,} bytes  "
            f"{r['seconds'] * 1000:8.1f} ms"
        )
    if not report["migrated"]:
        print(f"── {args.vm} stays on {args.source}: {report['failure']}")
        return 1
    print(
        f"── {args.vm} moved to {args.to} in {report['total_seconds'] * 1000:.1f} ms: "
        f"{len(report['rounds'])} rounds, {report['pages']:,} pages, {report['bytes']:,} bytes; "
        f"downtime {report['downtime_seconds'] * 1000:.1f} ms "
        f"(~{report['downtime_instructions']:,} guest instructions)"
    )
    return 0
