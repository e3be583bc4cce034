#!/usr/bin/env python3
"""Tests of tests/rig/soak_tally.py (standard library only; boots nothing)."""
import os
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import soak_tally  # noqa: E402


class SoakTally(unittest.TestCase):
    def test_wilson_interval_matches_the_textbook_value(self):
        lo, hi = soak_tally.wilson(5, 51)
        self.assertAlmostEqual(lo, 0.0426, places=3)
        self.assertAlmostEqual(hi, 0.2099, places=3)
        self.assertEqual(soak_tally.wilson(0, 0), (0.0, 1.0))

    def test_fisher_one_sided(self):
        # Lady tasting tea: 3 of 4 right vs 1 of 4, P(X >= 3) = 17/70.
        self.assertAlmostEqual(soak_tally.fisher_greater(3, 1, 1, 3), 17 / 70)
        self.assertAlmostEqual(soak_tally.fisher_greater(0, 10, 5, 5), 1.0)

    def test_tally_counts_runs_and_leaves_no_init_out_of_the_rate(self):
        lines = [
            "[ 1.0] TERN-BENCH name=net-soak run=1 vmm=tern outcome=ok figures=8 ms=1",
            "[ 2.0] TERN-BENCH name=net-soak run=2 vmm=qemu outcome=reset figures=3 ms=1",
            "[ 3.0] TERN-BENCH name=net-soak run=3 vmm=tern outcome=noinit figures=0 ms=1",
            "[ 4.0] TERN-BENCH name=net-soak run=4 vmm=qemu outcome=ok figures=8 ms=1",
            "[ 5.0] TERN-BENCH name=net-soak summary=net-soak vmm=tern runs=2 ok=1 reset=0",
            "[ 6.0] TERN-BENCH name=net-bench-tern vmm=tern test=TCP_RR result=1",
        ]
        with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as f:
            f.write("\n".join(lines) + "\n")
        try:
            outcomes = soak_tally.tally([f.name])
        finally:
            os.unlink(f.name)
        self.assertEqual(dict(outcomes["tern"]), {"ok": 1, "noinit": 1})
        self.assertEqual(dict(outcomes["qemu"]), {"ok": 1, "reset": 1})
        text = "\n".join(soak_tally.report(outcomes))
        self.assertIn("qemu: ok=1 reset=1 | silent resets 1/2", text)
        self.assertIn("tern: noinit=1 ok=1 | silent resets 0/1", text)
        self.assertIn("Fisher", text)


if __name__ == "__main__":
    unittest.main()
