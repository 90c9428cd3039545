#!/usr/bin/python3
"""docs/metrics.md lists exactly the metrics culvertd registers.

Metric names are taken from the source the way they are registered: StatsStore
`counter("culvert_...")` / `gauge(...)` / `histogram(...)` calls, and the BPF counters
rendered by name in App::renderStats (same call shape). The doc's names are the first
column of its tables.
"""

import glob
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testmain  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REGISTRATION = re.compile(r'\b(?:counter|gauge|histogram)\(\s*"(culvert_[a-z0-9_]+)"')
DOC_ROW = re.compile(r"^\| `(culvert_[a-z0-9_]+)` \| (counter|gauge|histogram) \|", re.M)


def code_metrics() -> set[str]:
    names = set()
    for d in ["agent", "proxy", "xds", "ebpf", "cni"]:
        for path in glob.glob(os.path.join(REPO, d, "**", "*.[ch]*"), recursive=True):
            with open(path, encoding="utf-8") as f:
                names |= set(REGISTRATION.findall(f.read()))
    return names


class MetricsDoc(unittest.TestCase):
    def test_doc_lists_every_registered_metric_and_nothing_else(self):
        with open(os.path.join(REPO, "docs/metrics.md"), encoding="utf-8") as f:
            doc = set(DOC_ROW.findall(f.read()))
        documented = {name for name, _ in doc}
        code = code_metrics()
        self.assertGreater(len(code), 5, "the registration pattern no longer matches the code")
        self.assertEqual(code - documented, set(), "metrics missing from docs/metrics.md")
        self.assertEqual(documented - code, set(), "docs/metrics.md lists metrics culvertd does not export")

    def test_counter_names_end_in_total(self):
        with open(os.path.join(REPO, "docs/metrics.md"), encoding="utf-8") as f:
            for name, kind in DOC_ROW.findall(f.read()):
                self.assertEqual(kind == "counter", name.endswith("_total"), name)


if __name__ == "__main__":
    testmain.run(sys.argv)
