"""unittest main for the packaging tests, with ctest's skip convention: exit 77 when
tests were skipped (not root) and nothing failed, 1 on any failure."""

import sys
import unittest


def run(argv: list[str]) -> None:
    result = unittest.main(argv=argv, verbosity=2, exit=False).result
    if not result.wasSuccessful():
        sys.exit(1)
    sys.exit(77 if result.skipped else 0)
