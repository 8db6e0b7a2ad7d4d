"""Started with PYTHONPATH=tests/sitecustomize:tests: every Python process (the CLI and the grid's
spawned workers) installs the fault plan of $LANDSCAPE_FAULT before it runs anything."""
import os

if os.environ.get("LANDSCAPE_FAULT"):
    import faults
    faults.install_from_env()
