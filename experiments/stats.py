"""Statistics for experiments/why_lstm.py: solved rates with a Wilson interval, and the median number of
training steps to solve with a bootstrap interval over seeds."""

import math
import random

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(successes, trials, z=Z_95):
    """Wilson score interval for a binomial proportion (Wilson 1927): unlike the normal approximation it
    stays inside [0, 1] and is not empty at 0/n or n/n, the common cases here."""
    if trials <= 0:
        raise ValueError("trials must be positive")
    if not 0 <= successes <= trials:
        raise ValueError("successes must be in [0, trials]")
    proportion = successes / trials
    denominator = 1 + z * z / trials
    centre = (proportion + z * z / (2 * trials)) / denominator
    half_width = z * math.sqrt(proportion * (1 - proportion) / trials + z * z / (4 * trials * trials)) / denominator
    # Exact bounds at the ends, where rounding would otherwise leave 1e-17 instead of 0.
    return (0.0 if successes == 0 else centre - half_width, 1.0 if successes == trials else centre + half_width)


def median(values):
    """Median; an unsolved run counts as math.inf (it needs more steps than the budget), so the median is
    finite only when more than half of the runs solved."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of nothing")
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    low, high = ordered[middle - 1], ordered[middle]
    return math.inf if math.isinf(high) else (low + high) / 2


def bootstrap_median_interval(values, confidence=0.95, resamples=4000, seed=0):
    """Percentile bootstrap interval of the median over runs (seeds resampled with replacement).  Unsolved
    runs are math.inf, so an upper bound of inf means "not solved in the budget in at least 2.5% of the
    resamples"."""
    rng = random.Random(seed)
    values = list(values)
    medians = sorted(median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1 - confidence) / 2
    low_index = int(math.floor(tail * resamples))
    high_index = min(resamples - 1, int(math.ceil((1 - tail) * resamples)) - 1)
    return medians[low_index], medians[high_index]


def fisher_exact_two_sided(successes_a, trials_a, successes_b, trials_b):
    """Fisher's exact test for two solved rates: the probability, with the margins fixed, of a table at most
    as likely as the observed one (the usual two-sided p-value)."""
    total_successes, total = successes_a + successes_b, trials_a + trials_b

    def probability(k):  # k successes in group a
        return (math.comb(trials_a, k) * math.comb(trials_b, total_successes - k)) / math.comb(total, total_successes)

    observed = probability(successes_a)
    possible = range(max(0, total_successes - trials_b), min(trials_a, total_successes) + 1)
    # The relative tolerance counts tables exactly as likely as the observed one despite rounding.
    return min(1.0, sum(p for p in map(probability, possible) if p <= observed * (1 + 1e-9)))
