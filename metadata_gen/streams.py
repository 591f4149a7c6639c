"""Every random stream of generation, training and evaluation, named in one table.

Two kinds:

- numpy ``SeedSequence`` words, for what is drawn once per task or distribution (family, parameters, shape,
  reshaping maps): task ``i`` of seed ``s`` draws from ``SeedSequence([s, WORD, i])`` (the task stream is
  ``[s, i]``);
- counter-rng streams (:mod:`metadata_gen.counter_rng`), for the noise drawn in bulk: named stream ``k`` uses the raw
  hash streams ``2k`` (uniforms, and the first half of normals) and ``2k + 1``, so distinct names never share a
  raw stream. Monte Carlo round ``r`` of a truth uses its own pair of names (:func:`monte_carlo_round`).

A test checks that all of them are distinct.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Word(IntEnum):
    """SeedSequence words (the task stream ``[seed, index]`` has none)."""

    DISTRIBUTION = 7_340_033  # family, target MI, dims, parameters of distribution ``index // tasks_per_distribution``
    RESHAPING = 5_767_169  # a task's reshaping maps
    CONDITIONAL = 4_194_319  # a conditional-MI task's shape, links, Z and maps (metadata_gen.conditional)


class Counter(IntEnum):
    """Counter-rng streams of one task's sample (keyed by the task) or of one distribution's truth (keyed by the
    distribution)."""

    SAMPLE = 1  # the joint sample's normals or uniforms
    CHI2 = 2  # Student-t: the χ² scale
    MIXTURE_LABELS = 3  # mixture components of the sample's rows
    MIXTURE_NOISE = 4
    MONTE_CARLO = 16  # first stream of Monte Carlo rounds; see monte_carlo_round


MAX_ROUNDS = 1 << 20


def monte_carlo_round(r: int) -> tuple[int, int]:
    """The (labels, noise) counter streams of Monte Carlo round ``r``: disjoint across rounds and from the rest."""
    if not 0 <= r < MAX_ROUNDS:
        raise ValueError(f"round {r} outside [0, {MAX_ROUNDS})")
    return Counter.MONTE_CARLO + 2 * r, Counter.MONTE_CARLO + 2 * r + 1


# Seeds derived from a config's seed (offsets, so that every stream is disjoint from the training streams).
TASK_KEY_SALT = 911  # xor into a task's counter key (disjoint from the distribution's key)
TRAIN_SHAPE_OFFSET = 7919  # training batches: the seed of each batch's shape draw
SUITE_OFFSET = 10_000_019  # evaluation suites
QUALITY_INDEPENDENCE_OFFSET = SUITE_OFFSET + 7  # quality checks: independent pairs
QUALITY_HIGH_MI_OFFSET = SUITE_OFFSET + 8  # quality checks: high-MI tasks
INTERVAL_CALIBRATION_OFFSET = 20_000_003  # mist calibrate: the tasks MI intervals are calibrated on
CONDITIONAL_NULL_OFFSET = 3_000_017  # conditional-MI null tasks: the seed of the unrelated E_y
ADAPT_OFFSET = 7_000_001  # mist adapt: the adapted meta-distribution's seed
ADAPT_TRAIN_SEED = 101  # mist adapt: the fine-tune's data seed


def task_rng(seed: int, index: int) -> np.random.Generator:
    """The stream of task ``index``: its n and its noise key."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def word_rng(seed: int, word: Word, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, int(word), index]))
