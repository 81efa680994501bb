"""``python -m tests.sim --seeds N --seed-start S [--nodes 3|5] [--groups K] [--planted-bug NAME]
[--profile chaos|leader-hunt|pause|power] [--ticks T] [--trace]``

Runs seeds; on the first violation prints the seed, the trace tail and the command that
replays it, and exits 1. With ``--planted-bug`` the exit status still means "a violation
was found" (1) or not (0).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from tests.sim.planted import PLANTED
from tests.sim.sim import PROFILES, Simulation, Violation
from warren.raft.node import RaftNode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.sim")
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--seed-start", type=int, default=0)
    ap.add_argument("--nodes", type=int, choices=(3, 5), default=3)
    ap.add_argument("--groups", type=int, default=2)
    ap.add_argument("--ticks", type=int, default=600)
    ap.add_argument("--planted-bug", choices=sorted(PLANTED), help="run this planted bug")
    ap.add_argument("--profile", choices=PROFILES, help="force this nemesis profile")
    ap.add_argument("--trace", action="store_true", help="print the trace tail on violation")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    profiles: Counter[str] = Counter()
    for seed in range(args.seed_start, args.seed_start + args.seeds):
        sim = Simulation(
            seed, args.nodes, args.groups, args.planted_bug or RaftNode, args.ticks,
            profile=args.profile,
        )  # fmt: skip
        profiles[sim.p.profile] += 1
        try:
            sim.run()
        except Violation as v:
            print(f"VIOLATION {v}")
            print("\n".join(sim.trace) if args.trace else "(--trace shows the last 300 events)")
            bugs = f" --planted-bug {args.planted_bug}" if args.planted_bug else ""
            if args.profile:
                bugs += f" --profile {args.profile}"
            print(
                f"replay: python -m tests.sim --seeds 1 --seed-start {seed} --nodes {args.nodes}"
                f" --groups {args.groups} --ticks {args.ticks}{bugs} --trace"
            )
            print(f"params: {sim.p}")
            return 1
    elapsed = time.perf_counter() - started
    mix = ", ".join(f"{n} {p}" for p, n in sorted(profiles.items()))
    print(
        f"{args.seeds} seeds clean in {elapsed:.1f}s ({args.seeds / elapsed:.1f} seeds/s; "
        f"{args.nodes} nodes; {mix})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
