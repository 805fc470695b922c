"""p2p-fmtl: a JAX simulator of fully decentralized federated multi-task learning.

Nodes sit on a gossip graph, run jitted local updates vmapped over the node axis,
and exchange parameters only with their neighbours.  Quick start::

    import p2p_fmtl
    cfg = p2p_fmtl.load_config("exp.toml", overrides={"run.rounds": 50})
    result = p2p_fmtl.run(cfg)
    result.metrics[-1]["test_acc"]
"""

from .config import Config, load_config
from .errors import ConfigError, DivergenceError, UserError
from .results import RunResult
from .runner import run

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "DivergenceError",
    "RunResult",
    "UserError",
    "load_config",
    "run",
    "__version__",
]
