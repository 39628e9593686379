"""`python -m edgecap.cli COMMAND ...`: the `edgecap` command without its entry point (tests and the bench
start it so, e.g. with runpy.run_module("edgecap.cli", run_name="__main__"))."""

import sys

from edgecap.cli import app

if __name__ == "__main__":
    sys.exit(app())
