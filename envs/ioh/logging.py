"""IOHanalyzer logs: an ``ioh.logger.Analyzer`` attached to a problem, under a named folder."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import ioh

__all__ = ["attach_analyzer"]

_HOLDERS: dict[int, SimpleNamespace] = {}


def attach_analyzer(problem, out: str | Path, *, algorithm_name: str, algorithm_info: str = "",
                    attributes: dict[str, float] | None = None) -> ioh.logger.Analyzer:  # fmt: skip
    """Attach an Analyzer writing IOHanalyzer's format (``IOHprofiler_f*.json`` +
    ``data_f*/*.dat``) to ``out / algorithm_name``; ``attributes`` (the solver's
    hyper-parameters) are recorded as run attributes. Call ``logger.close()`` when done."""
    if out is None:
        raise ValueError("Invalid out: name the directory for the logs (nothing is written to the cwd by surprise)")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    logger = ioh.logger.Analyzer(root=str(root), folder_name=algorithm_name, algorithm_name=algorithm_name,
                                 algorithm_info=algorithm_info, store_positions=False)  # fmt: skip
    if attributes:
        # ioh reads run attributes from an object's attributes at the start of every run.
        holder = SimpleNamespace(**{key: float(value) for key, value in attributes.items()})
        _HOLDERS[id(logger)] = holder  # keep it alive as long as the logger may read it
        logger.add_run_attributes(holder, list(attributes))
    problem.attach_logger(logger)
    return logger
