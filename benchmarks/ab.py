"""S3 alone, on two trees side by side: the delivery latency of one change.

Runs ``run.py``'s S3 (1,000 subscribers, 50 events a second for 20 seconds,
HTTP publishing, memory backend) ``--repeats`` times on each tree, the trees
taking turns for ``--rounds`` rounds, and prints one JSON line per run and the
medians. Make the other tree with ``git worktree add /tmp/before <commit>``::

    python benchmarks/ab.py /tmp/before . --rounds 2 --repeats 3

Each tree's gunicorn imports that tree's ``flask_eventstream`` (``run.py``
puts its root first on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

#: One tree's runs, in a process of its own so that its run.py is the tree's.
ONE_TREE = """
import json, sys
from pathlib import Path
root, repeats = Path(sys.argv[1]), int(sys.argv[2])
sys.path.insert(0, str(root / "benchmarks"))
import run
generator = run.build_load_generator(Path("/tmp") / "sseload-ab")
target = run.targets(["memory-http"], "", Path("/tmp/unused"), False)[0]
target.start()
try:
    run.s1(generator, target, 10)  # what a server sets up once
    for _ in range(repeats):
        found = run.deliveries(generator, target, 1000, 1000, 50, slack=30)
        print(json.dumps({"p99_ms": found["p99_ms"], "lost": found["lost"]}))
finally:
    target.stop()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs=2, type=Path, help="before and after")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    found: dict[str, list[float]] = {str(tree): [] for tree in args.trees}
    for _ in range(args.rounds):
        for tree in args.trees:
            command = [sys.executable, "-c", ONE_TREE, str(tree.resolve())]
            command.append(str(args.repeats))
            out = subprocess.run(command, check=True, capture_output=True, text=True)
            for line in out.stdout.splitlines():
                row = json.loads(line)
                assert row["lost"] == 0, row
                found[str(tree)].append(row["p99_ms"])
                print(json.dumps({"tree": str(tree), **row}), flush=True)
    for tree, runs in found.items():
        print(f"{tree}: S3 p99 median {statistics.median(runs):.2f} ms of {runs}")


if __name__ == "__main__":
    main()
