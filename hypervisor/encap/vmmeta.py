"""The META section of a .vmlab: the JSON a suspended VM's CPU, devices and counts are written
as, and its strict schema (docs/vmfile.md) — every field typed and bounded, so that what a
file says can be put into a VM without a second look."""

from __future__ import annotations

from typing import Any

from hypervisor import schema
from hypervisor.encap.state import (
    APIC_TIMER_FIELDS,
    COUNTERS,
    IOAPIC_FIELDS,
    LAPIC_FIELDS,
    PIC_FIELDS,
    PIT_FIELDS,
    UART_FIELDS,
    DeviceState,
    RunHistory,
    SuspendedVm,
)
from hypervisor.guest.image import MAX_IMAGE, GuestImage
from hypervisor.machine.cpu import STATE_FIELDS
from hypervisor.machine.hostram import PAGE
from hypervisor.schema import (
    BOOL,
    U8,
    U16,
    U32,
    U64,
    Float,
    Int,
    List,
    Map,
    Obj,
    OneOf,
    Optional,
    Row,
    Str,
)
from hypervisor.vmm.contract import Mode
from hypervisor.vmm.guestcpu import FpuState, GuestCpu

MAX_CONSOLE = 64 << 20
MAX_RAM = 1 << 30


_PIC: dict[str, schema.Spec] = {
    "vector_base": U8,
    "imr": U8,
    "irr": U8,
    "isr": U8,
    "init_step": Int(0, 4),
    "single": BOOL,
    "icw4_needed": BOOL,
    "icw3": U8,
    "auto_eoi": BOOL,
    "read_isr": BOOL,
    "poll": BOOL,
}
_PIT: dict[str, schema.Spec] = {
    "mode": Int(0, 7),
    "access": Int(0, 3),
    "bcd": BOOL,
    "reload": Int(1, 0x10000),
    "counting": BOOL,
    "start": U64,
    "stopped_count": U16,
    "stopped_out": BOOL,
    "null_count": BOOL,
    "low_byte": Optional(U8),
    "read_high": BOOL,
    "latched_count": Optional(U16),
    "latched_status": Optional(U8),
}
_UART: dict[str, schema.Spec] = {
    "ier": U8,
    "lcr": U8,
    "mcr": U8,
    "scr": U8,
    "fcr": U8,
    "divisor": U16,
}
_VECTORS = Int(0, (1 << 256) - 1)  # one bit per vector
_LAPIC: dict[str, schema.Spec] = {
    "base": U64,
    "apic_id": U8,
    "tpr": U8,
    "ldr": U32,
    "dfr": U32,
    "svr": Int(0, 0x1FF),
    "irr": _VECTORS,
    "isr": _VECTORS,
    "tmr": _VECTORS,
    "esr": U8,
    "errors": U8,
    "icr": U64,
    "lvt": List(U32, 6, 6),
}
_APIC_TIMER: dict[str, schema.Spec] = {
    "ticks": U64,
    "start": U64,
    "initial": U32,
    "divide_config": Int(0, 0xB),
    "periodic": BOOL,
}
_IOAPIC: dict[str, schema.Spec] = {
    "ioapic_id": Int(0, 15),
    "select": U8,
    "table": List(U64, 24, 24),
}
assert (tuple(_PIC), tuple(_PIT), tuple(_UART)) == (PIC_FIELDS, PIT_FIELDS, UART_FIELDS)
assert (tuple(_LAPIC), tuple(_APIC_TIMER), tuple(_IOAPIC)) == (
    LAPIC_FIELDS,
    APIC_TIMER_FIELDS,
    IOAPIC_FIELDS,
)
_SELECTORS = ("cs", "ss", "ds", "es", "fs", "gs")
_CPU: schema.Spec = {
    "registers": {name: U16 if name in _SELECTORS else U32 for name in STATE_FIELDS},
    "cpl": Int(0, 3),
    "cr0": U32,
    "cr2": U32,
    "cr3": U32,
    "cr4": U32,
    "gdtr": Row((U32, U16)),
    "idtr": Row((U32, U16)),
    "ldtr": U16,
    "tr": U16,
    "tss": Optional(Row((U32, U32))),
    "dr": List(U32, 8, 8),
    "msr": List(Row((U32, U64)), 64),
    "interrupt_shadow": BOOL,
    "halted": BOOL,
    "fpu": {
        "control": U16,
        "status": U16,
        "tag": U16,
        "stack": List(Row((U64, U16)), 8, 8),
        "mxcsr": U32,
        "xmm": List(Int(0, (1 << 128) - 1), 8, 8),
    },
}
META: schema.Spec = {
    "format": OneOf(frozenset({"vmlab-suspended-vm"})),
    "name": Str(64),
    "guest": {
        "name": Str(64),
        "sha256": Str(64),
        "size": Int(1, MAX_IMAGE),
        "paravirtual": BOOL,
    },
    "mode": OneOf(frozenset(Mode)),
    "ram_size": Int(PAGE, MAX_RAM),
    "cpu": _CPU,
    "devices": Obj(
        {
            "pic": List(_PIC, 2, 2),
            "pit_ticks": U64,
            "pit": List(_PIT, 3, 3),
            "uart": _UART,
            "platform_index": U8,
            "lapic": {**_LAPIC, "timer": _APIC_TIMER},
            "ioapic": _IOAPIC,
        },
        optional=frozenset({"lapic", "ioapic"}),  # files from before the APICs
    ),
    "history": {
        "step": U64,
        "ticks": U64,
        "counters": dict.fromkeys(COUNTERS, Map(U64, 256)),
        "traced": BOOL,
        "timeline": List(Row((U64, Float())), 1 << 16),
    },
    "console_size": Int(0, MAX_CONSOLE),
    "pending_line": Int(0, MAX_CONSOLE),
    "ram_included": BOOL,
}


def meta_of(s: SuspendedVm) -> dict[str, Any]:
    """The META document of a suspended VM."""
    cpu, devices, history = s.cpu, s.devices, s.history
    fpu = cpu.fpu
    return {
        "format": "vmlab-suspended-vm",
        "name": s.name,
        "guest": {
            "name": s.image.name,
            "sha256": s.image.sha256,
            "size": len(s.image.data),
            "paravirtual": s.image.paravirtual,
        },
        "mode": s.mode,
        "ram_size": s.ram_size,
        "cpu": {
            "registers": dict(zip(STATE_FIELDS, cpu.registers, strict=True)),
            "cpl": cpu.cpl,
            "cr0": cpu.cr0,
            "cr2": cpu.cr2,
            "cr3": cpu.cr3,
            "cr4": cpu.cr4,
            "gdtr": list(cpu.gdtr),
            "idtr": list(cpu.idtr),
            "ldtr": cpu.ldtr,
            "tr": cpu.tr,
            "tss": list(cpu.tss) if cpu.tss else None,
            "dr": list(cpu.dr),
            "msr": [list(pair) for pair in cpu.msr],
            "interrupt_shadow": cpu.interrupt_shadow,
            "halted": cpu.halted,
            "fpu": {
                "control": fpu.control,
                "status": fpu.status,
                "tag": fpu.tag,
                "stack": [list(st) for st in fpu.stack],
                "mxcsr": fpu.mxcsr,
                "xmm": list(fpu.xmm),
            },
        },
        "devices": {
            "pic": list(devices.pic),
            "pit_ticks": devices.pit_ticks,
            "pit": list(devices.pit),
            "uart": devices.uart,
            "platform_index": devices.platform_index,
            **({"lapic": devices.lapic} if devices.lapic is not None else {}),
            **({"ioapic": devices.ioapic} if devices.ioapic is not None else {}),
        },
        "history": {
            "step": history.step,
            "ticks": history.ticks,
            "counters": history.counters,
            "traced": history.traced,
            "timeline": [list(point) for point in history.timeline],
        },
        "console_size": len(s.console),
        "pending_line": len(s.pending_line),
        "ram_included": bool(s.ram),
    }


def suspended_of(
    meta: dict[str, Any], image: GuestImage, console: bytes, ram: bytes
) -> SuspendedVm:
    """The suspended VM a META document (already checked against META) describes."""
    c, d, h = meta["cpu"], meta["devices"], meta["history"]
    f = c["fpu"]
    cpu = GuestCpu(
        registers=tuple(c["registers"][name] for name in STATE_FIELDS),
        cpl=c["cpl"],
        cr0=c["cr0"],
        cr2=c["cr2"],
        cr3=c["cr3"],
        cr4=c["cr4"],
        gdtr=(c["gdtr"][0], c["gdtr"][1]),
        idtr=(c["idtr"][0], c["idtr"][1]),
        ldtr=c["ldtr"],
        tr=c["tr"],
        tss=(c["tss"][0], c["tss"][1]) if c["tss"] else None,
        dr=tuple(c["dr"]),
        msr=tuple((i, v) for i, v in c["msr"]),
        interrupt_shadow=c["interrupt_shadow"],
        halted=c["halted"],
        fpu=FpuState(
            control=f["control"],
            status=f["status"],
            tag=f["tag"],
            stack=tuple((m, e) for m, e in f["stack"]),
            mxcsr=f["mxcsr"],
            xmm=tuple(f["xmm"]),
        ),
    )
    devices = DeviceState(
        pic=(d["pic"][0], d["pic"][1]),
        pit_ticks=d["pit_ticks"],
        pit=tuple(d["pit"]),
        uart=d["uart"],
        platform_index=d["platform_index"],
        lapic=d.get("lapic"),
        ioapic=d.get("ioapic"),
    )
    history = RunHistory(
        step=h["step"],
        ticks=h["ticks"],
        counters=h["counters"],
        traced=h["traced"],
        timeline=tuple((step, float(pct)) for step, pct in h["timeline"]),
    )
    split = len(console) - meta["pending_line"]
    return SuspendedVm(
        name=meta["name"],
        image=image,
        mode=meta["mode"],
        ram_size=meta["ram_size"],
        cpu=cpu,
        devices=devices,
        history=history,
        console=console,
        pending_line=console[split:],
        ram=ram,
    )
