import os
import tempfile
from pathlib import Path

# Keep the suite light on 2 cores and deterministic.  The suite's programs are small and
# most run a few rounds once compiled, so compiling dominates: LLVM's optimisation passes
# and most of XLA's cost more than they save.
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_cpu_multi_thread_eigen=false --xla_backend_optimization_level=0 "
    "--xla_llvm_disable_expensive_passes=true",
)
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One compilation cache for the whole suite and the processes it starts (CLI runs, sweep
# workers, the combination matrix's workers, xdist workers): a program compiled once is
# loaded from disk by the next process that needs it.  A cache, not an output: safe to
# delete at any time.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(Path(tempfile.gettempdir()) / "p2p_fmtl_test_jax_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_collection_modifyitems(session, config, items):
    """The combination matrix first: it is the longest file (its two worker processes run
    for minutes), so xdist starts it before the short files fill the other worker."""
    items.sort(key=lambda item: item.path.name != "test_combinations.py")
