"""The partition of ALOHA placement seeds (object placements are `env.reset(seed=...)`).

Demonstrations are recorded on placements 0, 1, ...; fine-tuning selects its model on
placements from `VALIDATION_SEED`; success is reported on placements from `EVAL_SEED`. The
ranges are fixed (not derived from a run's seed) so that every method and seed is validated
and evaluated on the same placements, and far enough apart that no run reaches the next.
"""

VALIDATION_SEED = 500_000  # model-selection placements
EVAL_SEED = 10**6  # evaluation placements
