"""Problems for bbopt solvers (installed as ``bbopt.envs``)."""

import gymnasium

from bbopt.envs.functions import FUNCTIONS, rastrigin, rosenbrock, sphere

# Registration by string entry point: ioh is imported only when an env is made.
for _name, _suite, _defaults in (
    ("BBOB", "bbob", {"function": 1, "instance": 1, "dimension": 5}),
    ("PBO", "pbo", {"function": 1, "instance": 1, "dimension": 16}),
    ("Graph", "graph", {"function": 2000, "instance": 1, "dimension": 1}),
):
    if f"bbopt/{_name}-v0" not in gymnasium.registry:
        gymnasium.register(f"bbopt/{_name}-v0", entry_point="bbopt.envs.ioh.env:IOHEnv",
                           kwargs={"suite": _suite, **_defaults})  # fmt: skip

for _name, _entry in (("BinPacking", "BinPackingEnv"), ("BinPackingOnline", "BinPackingOnlineEnv")):
    if f"bbopt/{_name}-v0" not in gymnasium.registry:
        gymnasium.register(f"bbopt/{_name}-v0", entry_point=f"bbopt.envs.binpacking.env:{_entry}")

for _name, _task in (("AlohaTransferCube", "transfer_cube"), ("AlohaInsertion", "insertion")):
    if f"bbopt/{_name}-v0" not in gymnasium.registry:  # 300 steps: the env truncates itself
        gymnasium.register(f"bbopt/{_name}-v0", entry_point="bbopt.envs.aloha.env:AlohaStateEnv",
                           kwargs={"task": _task})  # fmt: skip

__all__ = ["FUNCTIONS", "rastrigin", "rosenbrock", "sphere"]
