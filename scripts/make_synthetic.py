#!/usr/bin/env python3
"""Write a synthetic CT study (one series) for throughput measurements.

Every value is made up; the identifying ones are PHI tokens (see deid_node/testing/synthetic/).

    python scripts/make_synthetic.py --ct 200 --out /tmp/ct200            # 512x512, ~0.5 MB each
    python scripts/make_synthetic.py --ct 20 --out /tmp/ct20 --rows 64 --cols 64 --seed 3 \\
        --tokens-json /tmp/ct20-tokens.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, iter_ct_series, write_files


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write an N-slice synthetic CT series (16-bit, Explicit VR Little Endian)."
    )
    parser.add_argument("--ct", type=_positive, required=True, metavar="N", help="slices")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument("--rows", type=_positive, default=512)
    parser.add_argument("--cols", type=_positive, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tokens-json",
        type=Path,
        metavar="FILE",
        help="also write the planted PHI tokens (value, path, kind) as JSON",
    )
    args = parser.parse_args(argv)
    if args.rows < 8 or args.cols < 8:
        parser.error("--rows and --cols must be >= 8")

    started = time.perf_counter()
    tokens = PhiTokens()
    patient = SyntheticPatient.make(tokens, seed=args.seed)
    slices = iter_ct_series(
        args.ct, patient=patient, rows=args.rows, cols=args.cols, seed=args.seed
    )
    paths = write_files(slices, args.out)
    if args.tokens_json is not None:
        records = [{"value": r.value, "path": r.path, "kind": r.kind} for r in tokens.records]
        args.tokens_json.write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    elapsed = time.perf_counter() - started
    size = sum(p.stat().st_size for p in paths)
    print(
        f"wrote {len(paths)} CT slices {args.rows}x{args.cols} 16-bit to {args.out}: "
        f"{size / 1e6:.1f} MB in {elapsed:.1f} s, {len(tokens)} PHI tokens, seed {args.seed}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
