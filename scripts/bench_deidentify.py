#!/usr/bin/env python3
"""Offline throughput: `deid-node deidentify` on a synthetic 500-slice CT folder.

    .venv/bin/python scripts/bench_deidentify.py [--files 500] [--repeat 3] [--workers 0]

Data and output go to a temporary folder outside the repo and are removed afterwards.
Prints files/s and MB/s per run, then the median and the best.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="0 = CPU count")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="deid-bench-"))
    try:
        data = work / "ct"
        make = [sys.executable, str(REPO / "scripts" / "make_synthetic.py")]
        subprocess.run([*make, "--ct", str(args.files), "--out", str(data)], check=True)
        size = sum(p.stat().st_size for p in data.iterdir())
        cfg = work / "bench.toml"
        cfg.write_text(
            '[node]\ndata_dir = "var"\n[profiles.research]\n'
            'options = ["retain-longitudinal-modified-dates", "retain-safe-private"]\n'
        )
        env = {**os.environ, "DEID_NODE_SECRET": "42" * 32}
        rates = []
        for i in range(args.repeat):
            out = work / f"out{i}"
            cmd = [sys.executable, "-m", "deid_node", "deidentify", str(data)]
            cmd += ["-o", str(out), "-p", "research", "-c", str(cfg)]
            cmd += ["--workers", str(args.workers)]
            start = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            elapsed = time.perf_counter() - start
            rates.append(args.files / elapsed)
            print(
                f"run {i + 1}: {args.files} files in {elapsed:.2f} s = "
                f"{args.files / elapsed:.0f} files/s, {size / elapsed / 1e6:.0f} MB/s"
            )
            shutil.rmtree(out)
        print(
            f"deidentify, {args.files} CT files ({size / 1e6:.0f} MB), {os.cpu_count()} CPUs: "
            f"median {statistics.median(rates):.0f} files/s, best {max(rates):.0f} files/s"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
