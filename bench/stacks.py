"""Summarise py-spy collapsed stacks (``py-spy record -f raw``): self and total share per
function, to find what the hot path spends its time on.

    .venv/bin/python bench/stacks.py profile.txt [--top 40]
"""

from __future__ import annotations

import argparse
from collections import Counter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("file")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    self_time: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    with open(args.file) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            samples += n
            frames = stack.split(";")
            self_time[frames[-1]] += n
            for frame in set(frames):
                total[frame] += n
    print(f"{samples} samples")
    print("self%   total%  function")
    for frame, n in self_time.most_common(args.top):
        print(f"{100 * n / samples:5.1f}  {100 * total[frame] / samples:6.1f}  {frame}")


if __name__ == "__main__":
    main()
