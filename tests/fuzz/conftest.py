"""Print the fuzz harness's totals (inputs tried per file kind and outcome) at the end of the run."""

from fuzz_harness import TOTALS


def pytest_terminal_summary(terminalreporter):
    if TOTALS:
        terminalreporter.section("fuzz totals")
        for key in sorted(TOTALS):
            terminalreporter.write_line(f"{key}: {TOTALS[key]}")
        terminalreporter.write_line(f"total inputs: {sum(TOTALS.values())}")
