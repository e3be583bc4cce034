#!/usr/bin/env python3
"""Adds up net-soak (or boot-soak) runs from rig L1 logs: per VMM, how the runs ended,
the silent-reset rate with a 95% Wilson interval, and a one-sided Fisher exact test of
"tern's guests reset more often than QEMU's".

    tests/rig/soak_tally.py target/rig-logs/STAMP-*.log [...]

Each TERN-BENCH line with run= (net-soak) or boot= (boot-soak), vmm= and outcome= is
one run; a run repeated by the rig after an L1 fault appears in its retry's log only
once per log, so pass every log of the stamps to count."""
import math
import re
import sys
from collections import Counter, defaultdict

LINE = re.compile(r"TERN-BENCH name=(net-soak|boot-soak) (.*)")


def wilson(k, n, z=1.96):
    """95% Wilson score interval for k successes in n trials."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, centre - half), min(1.0, centre + half))


def fisher_greater(a, b, c, d):
    """P(X >= a) for the 2x2 table [[a, b], [c, d]] with fixed margins
    (one-sided Fisher exact test: the first row's rate is higher)."""
    n1, n2, k = a + b, c + d, a + c

    def h(x):
        return math.comb(n1, x) * math.comb(n2, k - x) / math.comb(n1 + n2, k)

    return sum(h(x) for x in range(a, min(n1, k) + 1))


def tally(paths):
    outcomes = defaultdict(Counter)
    for path in paths:
        with open(path, errors="replace") as f:
            for line in f:
                m = LINE.search(line)
                if not m:
                    continue
                fields = dict(kv.split("=", 1) for kv in m.group(2).split() if "=" in kv)
                if "outcome" in fields and ("run" in fields or "boot" in fields):
                    outcomes[fields["vmm"]][fields["outcome"]] += 1
    return outcomes


def report(outcomes):
    lines = []
    for vmm in sorted(outcomes):
        c = outcomes[vmm]
        n = sum(c.values()) - c["noinit"] - c["no-init"]
        lo, hi = wilson(c["reset"], n)
        kinds = " ".join(f"{k}={v}" for k, v in sorted(c.items()))
        rate = c["reset"] / n if n else 0.0
        lines.append(f"{vmm}: {kinds} | silent resets {c['reset']}/{n} runs that reached init = "
                     f"{100 * rate:.1f}% (95% CI {100 * lo:.1f}-{100 * hi:.1f}%)")
    if "tern" in outcomes and "qemu" in outcomes:
        t, q = outcomes["tern"], outcomes["qemu"]
        tn = sum(t.values()) - t["noinit"] - t["no-init"]
        qn = sum(q.values()) - q["noinit"] - q["no-init"]
        p = fisher_greater(t["reset"], tn - t["reset"], q["reset"], qn - q["reset"])
        lines.append(f"one-sided Fisher exact p (tern resets more often than QEMU) = {p:.3f}")
    return lines


def main(argv):
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    outcomes = tally(argv)
    if not outcomes:
        print("no soak runs in these logs", file=sys.stderr)
        return 1
    print("\n".join(report(outcomes)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
