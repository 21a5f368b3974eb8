"""Installs bench/trial_cost.py's phase tracer in every Python process started with this folder on
PYTHONPATH and NCSEARCH_PHASE_TRACE set (see ncsearch_phase_trace.py)."""

import os

if os.environ.get("NCSEARCH_PHASE_TRACE"):
    import ncsearch_phase_trace

    ncsearch_phase_trace.install()
