"""Measure what the outbox's fsync policy costs: messages/s for SQLite WAL synchronous=FULL vs NORMAL.

Writes docs/outbox-bench.json. Each policy gets a fresh outbox file in ``--dir`` (put it
on the disk the gateway will use: an SD card, an SSD...) and three phases:

- put:   store N messages one by one (one transaction each, as the gateway does);
- ack:   take them 20 at a time and acknowledge them (the PUBACK path);
- cycle: put, take and ack one message at a time (a gateway keeping up with its broker).

The payload is a real readings message (50 readings of one sensor, JSON as on the wire).

    .venv/bin/python scripts/bench_outbox.py                # 2000 messages per phase, 3 repeats
    .venv/bin/python scripts/bench_outbox.py --messages 500 --dir /mnt/sdcard/bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edge.contracts import Reading
from gateway.device.outbox import READING, SYNC_POLICIES, Outbox
from gateway.protocol import payloads

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_772_409_600_000
ACK_GROUP = 20  # PUBACKs handled together by the sender, as with a window of in-flight messages


def readings_payload() -> bytes:
    """One readings message as the gateway sends it: 50 readings of one sensor."""
    batch = [Reading(T0 + i * 60_000, "net3", "gw-01", "F-lake", "flow", 100.0 + i / 7, "L/s") for i in range(50)]
    return payloads.encode_readings(batch)


def bench_once(folder: Path, sync: str, n: int, payload: bytes) -> dict:
    """Put, take and acknowledge ``n`` messages through an outbox with synchronous=``sync``: rates and latencies."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"outbox-{sync}.sqlite3"
    for leftover in folder.glob(f"outbox-{sync}.sqlite3*"):
        leftover.unlink()
    stream = "frugalsense/net3/gw-01/readings/F-lake"
    with Outbox(path, sync=sync, max_bytes=1 << 30) as box:
        latencies = []
        start = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            box.put(stream, payload, READING, items=50)
            latencies.append(time.perf_counter() - t)
        put_s = time.perf_counter() - start

        start = time.perf_counter()
        while True:
            batch = box.take(ACK_GROUP)
            if not batch:
                break
            box.ack(m.id for m in batch)
        ack_s = time.perf_counter() - start

        start = time.perf_counter()
        for _ in range(n):
            box.put(stream, payload, READING, items=50)
            box.ack(m.id for m in box.take(1))
        cycle_s = time.perf_counter() - start
    latencies.sort()
    return {
        "put_per_s": n / put_s,
        "ack_per_s": n / ack_s,
        "cycle_per_s": n / cycle_s,
        "put_p50_ms": 1000 * latencies[len(latencies) // 2],
        "put_p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }


def filesystem_of(path: Path) -> str:
    """The mount's file system type, from /proc/mounts (longest matching mount point)."""
    best, fstype = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount_point, kind, *_ = line.split()
            if str(path.resolve()).startswith(mount_point) and len(mount_point) > len(best):
                best, fstype = mount_point, kind
    except OSError:
        pass
    return fstype


DOC_START, DOC_END = "<!-- bench:start (written by scripts/bench_outbox.py) -->", "<!-- bench:end -->"


def update_doc(doc: Path, report: dict) -> None:
    """Rewrite the measured table in docs/outbox.md (between its markers), so no figure is typed by hand."""
    if not doc.exists():
        return
    text = doc.read_text()
    if DOC_START not in text or DOC_END not in text:
        return
    m = report["machine"]
    lines = [
        DOC_START,
        "",
        f"Measured by `scripts/bench_outbox.py` ({report['messages_per_phase']} messages per phase, median of "
        f"{report['repeats']} runs, {report['payload_bytes']}-byte readings messages) on {m['platform']}, "
        f"{m['cpus']} CPUs, {m['filesystem']}, SQLite {m['sqlite']}:",
        "",
        "| synchronous | put/s | ack/s (20 per PUBACK batch) | put+take+ack/s | put p50 ms | put p99 ms "
        "| put/s of each run |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        runs = ", ".join(f"{v:.0f}" for v in r["put_per_s_runs"])
        lines.append(
            f"| {r['sync'].upper()} | {r['put_per_s']:.0f} | {r['ack_per_s']:.0f} | {r['cycle_per_s']:.0f} | "
            f"{r['put_p50_ms']:.3f} | {r['put_p99_ms']:.3f} | {runs} |"
        )
    ratio = report["full_vs_normal"]
    lines += [
        "",
        f"FULL runs at {ratio['put_per_s']:.1%} of NORMAL's put rate and {ratio['cycle_per_s']:.1%} of its "
        "put+take+ack rate here.",
        "",
        DOC_END,
    ]
    before, rest = text.split(DOC_START, 1)
    after = rest.split(DOC_END, 1)[1]
    doc.write_text(before + "\n".join(lines) + after)


def main(argv: list[str] | None = None) -> int:
    """Measure every sync policy (median of runs); write docs/outbox-bench.json and the table in docs/outbox.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per phase (default 2000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per policy; the median is kept (default 3)")
    parser.add_argument("--dir", type=Path, default=None, help="where the test outboxes go (default: under .run/)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "outbox-bench.json")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.repeats < 1:
        parser.error("--messages and --repeats must be at least 1")

    (ROOT / ".run").mkdir(exist_ok=True)
    folder = args.dir or Path(tempfile.mkdtemp(prefix="outbox-bench-", dir=ROOT / ".run"))
    payload = readings_payload()
    runs: dict[str, list[dict]] = {sync: [] for sync in SYNC_POLICIES}
    try:
        for repeat in range(args.repeats):
            for sync in SYNC_POLICIES:  # interleaved, so a slow moment of the disk hits both
                result = bench_once(folder, sync, args.messages, payload)
                runs[sync].append(result)
                print(
                    f"run {repeat + 1}/{args.repeats} sync={sync}: "
                    + ", ".join(f"{k} {v:.1f}" for k, v in result.items()),
                    flush=True,
                )
    finally:
        if args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)

    results = []
    for sync, items in runs.items():
        row = {"sync": sync}
        for key in items[0]:
            row[key] = round(statistics.median(r[key] for r in items), 3)
        # The spread matters: fsync time depends on what else the disk is doing.
        row["put_per_s_runs"] = [round(r["put_per_s"], 1) for r in items]
        results.append(row)
    full, normal = results
    report = {
        "what": "gateway outbox (SQLite WAL): messages/s per fsync policy, median of the repeats",
        "script": "scripts/bench_outbox.py",
        "messages_per_phase": args.messages,
        "repeats": args.repeats,
        "payload_bytes": len(payload),
        "readings_per_message": 50,
        "ack_group": ACK_GROUP,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "cpus": os.cpu_count(),
            "filesystem": filesystem_of(folder if args.dir else ROOT / ".run"),
        },
        "results": results,
        "full_vs_normal": {key: round(full[key] / normal[key], 3) for key in ("put_per_s", "ack_per_s", "cycle_per_s")},
        "chosen": "full",
        "why": "a message put has returned for survives a power cut; the cost is far below what a gateway "
        "needs (a few messages per second), see docs/outbox.md",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.out.resolve() == (ROOT / "docs" / "outbox-bench.json").resolve():
        update_doc(ROOT / "docs" / "outbox.md", report)
    print(f"\n{'sync':8} {'put/s':>10} {'ack/s':>10} {'cycle/s':>10} {'put p50 ms':>11} {'put p99 ms':>11}")
    for r in results:
        print(
            f"{r['sync']:8} {r['put_per_s']:10.0f} {r['ack_per_s']:10.0f} {r['cycle_per_s']:10.0f} "
            f"{r['put_p50_ms']:11.3f} {r['put_p99_ms']:11.3f}"
        )
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
