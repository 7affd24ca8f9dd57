#!/usr/bin/env python3
"""Peak memory of the control plane while it streams a large audit export.

Starts `agent-secret-store dev` (SQLite) in a temporary directory, appends audit events to the
tenant's table directly (the export reads rows in chain order; it does not verify hashes, so
the filler rows need no valid chain), and downloads `GET /v1/audit?format=jsonl` with curl to
/dev/null twice: after SMALL events and after EVENTS events. It samples the server's resident
memory (VmRSS) every 20 ms during each download and prints both peaks. Flat memory means the
two peaks are close although the second export is ten times larger. No timing is asserted.

Usage: python3 bench/audit_export_rss.py [--events 1000000] [--small 100000]
                                          [--bin target/release/agent-secret-store]
"""
import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start_dev(binary: str, directory: str) -> tuple[subprocess.Popen, dict]:
    args = [binary, "dev", "--json", "--dir", directory]
    for flag in ["--listen", "--proxy-listen", "--admin-listen", "--echo-listen", "--mcp-listen"]:
        args += [flag, "127.0.0.1:0"]
    dev = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    doc = ""
    while True:
        line = dev.stdout.readline()
        if not line:
            sys.exit("dev exited before printing its settings")
        doc += line
        try:
            return dev, json.loads(doc)
        except json.JSONDecodeError:
            continue


def append_events(db_path: str, tenant: str, count: int) -> None:
    """Appends `count` secret.read rows after the tenant's last position."""
    db = sqlite3.connect(db_path, timeout=60)
    (last,) = db.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM audit_events WHERE tenant_id = ?", (tenant,)
    ).fetchone()
    now = int(time.time() * 1_000_000)
    blob = bytes(32)
    batch = []
    for i in range(count):
        seq = last + 1 + i
        batch.append((
            str(uuid.uuid4()), tenant, seq, "secret.read", f"token:{uuid.UUID(int=seq % 97)}",
            "10.0.0.1", f"agent/{seq}", "prod/api/key", "api.example.com", 1,
            f"version {seq % 5 + 1}", now + seq, blob, blob,
        ))
        if len(batch) == 50_000:
            db.executemany("INSERT INTO audit_events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", batch)
            db.commit()
            batch = []
    if batch:
        db.executemany("INSERT INTO audit_events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", batch)
        db.commit()
    db.close()


def export(pid: int, info: dict) -> tuple[int, int, int]:
    """Downloads the JSON Lines export; returns (peak RSS KiB, baseline RSS KiB, bytes)."""
    baseline = rss_kib(pid)
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out = subprocess.run(
        ["curl", "-sS", "--fail", "--cacert", info["ca_cert"],
         "-H", f"Authorization: Bearer {info['admin_token']}",
         "-o", "/dev/null", "-w", "%{size_download}",
         f"{info['control_plane_url']}/v1/audit?format=jsonl"],
        capture_output=True, text=True, check=True,
    )
    done.set()
    sampler.join()
    return peak[0], baseline, int(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--bin", default="target/release/agent-secret-store")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        dev, info = start_dev(args.bin, directory)
        try:
            db_path = os.path.join(directory, "store.db")
            rows = []
            total = 0
            for target in [args.small, args.events]:
                append_events(db_path, info["tenant_id"], target - total)
                total = target
                peak, baseline, size = export(dev.pid, info)
                rows.append((total, baseline, peak, size))
            print(f"{'events':>10} {'RSS before':>12} {'peak RSS':>10} {'exported':>12}")
            for total, baseline, peak, size in rows:
                print(f"{total:>10} {baseline / 1024:>9.1f} MiB {peak / 1024:>6.1f} MiB "
                      f"{size / 1_048_576:>8.1f} MiB")
            (_, _, small_peak, _), (_, _, big_peak, _) = rows
            print(f"peak RSS ratio {args.events // args.small}x the events: "
                  f"{big_peak / small_peak:.2f}x the memory")
        finally:
            dev.terminate()
            dev.wait(timeout=30)


if __name__ == "__main__":
    main()
