"""The partition of ALOHA placement seeds (object placements are `env.reset(seed=...)`).

Demonstrations are recorded on placements 0, 1, ...; fine-tuning screens its weights on
placements from `VALIDATION_SEED` and confirms the shortlist on placements from
`CONFIRMATION_SEED` (`bbopt.envs.aloha.selection`); success is reported on placements from
`EVAL_SEED`. The
ranges are fixed (not derived from a run's seed) so that every method and seed is validated
and evaluated on the same placements, and far enough apart that no run reaches the next.
"""

VALIDATION_SEED = 500_000  # model-selection placements: the screen
CONFIRMATION_SEED = 750_000  # model-selection placements: the confirmation of the screen's shortlist
EVAL_SEED = 10**6  # evaluation placements
