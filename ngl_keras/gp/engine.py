"""Tree genetic programming on flat prefix lists: the primitive set, ramped half-and-half,
crossover, subtree and one-point mutation, (μ+λ) truncation selection and the archive.

A tree is the prefix list of `ngl_keras.formula` (operator names, variable names,
float constants), so a tree becomes a loss only through `ExpressionLoss`. Every operator
takes an explicit `random.Random`; nothing reads global random state.
"""

import math
from dataclasses import dataclass, field

from ngl_keras import formula
from ngl_keras.settings import RANGE, Settings, check, integer_at_least


def _known_operators(operators):
    if not operators:
        raise ValueError(f"the operator set is empty; give at least one of {', '.join(formula.OPERATORS)}.")
    unknown = [op for op in operators if op not in formula.OPERATORS]
    if unknown:
        raise ValueError(f"unknown operators {unknown}; known: {', '.join(formula.OPERATORS)}.")
    return True


@dataclass(frozen=True)
class PrimitiveSet(Settings):
    """Operators (names in `formula.OPERATORS`), variables, constant range, and the
    variables every individual must contain."""

    operators: tuple[str, ...] = field(metadata=check(_known_operators, "known operators"))
    variables: tuple[str, ...] = field(metadata=check(bool, "at least one variable",
                                                      "the primitive set needs at least one variable."))
    constant_range: tuple[float, ...] = field(default=(-5.0, 5.0), metadata=RANGE)
    required: tuple[str, ...] = ()
    # a leaf is an ephemeral constant with this probability
    constant_probability: float = field(default=0.3, metadata=check(
        lambda v: 0.0 <= v <= 1.0, "in [0, 1]", "{key} must lie in [0, 1]; got {value!r}."))
    constant_digits: int = 4

    def check(self):
        missing = set(self.required) - set(self.variables)
        if missing:
            raise ValueError(f"required variables {sorted(missing)} are not variables {list(self.variables)}.")

    def by_arity(self, arity):
        return [op for op in self.operators if formula.OPERATORS[op].arity == arity]

    def leaf(self, rng):
        if rng.random() >= self.constant_probability:
            return rng.choice(self.variables)
        return round(rng.uniform(*self.constant_range), self.constant_digits)


@dataclass(frozen=True)
class Limits(Settings):
    min_height: int = field(default=2, metadata=integer_at_least(0))
    max_size: int = field(default=100, metadata=integer_at_least(1))
    init_max_height: int = field(default=5, metadata=integer_at_least(0))
    mutation_max_height: int = field(default=3, metadata=integer_at_least(0))

    def check(self):
        # The smallest tree of height h has h + 1 nodes (a chain of unary operators).
        if self.min_height + 1 > self.max_size:
            raise ValueError(f"min_height {self.min_height} needs at least {self.min_height + 1} "
                             f"nodes, above max_size {self.max_size}.")
        if self.min_height < 0 or self.init_max_height < self.min_height:
            raise ValueError(f"heights must satisfy 0 <= min_height <= init_max_height; got "
                             f"min_height={self.min_height}, init_max_height={self.init_max_height}.")


def height(tree):
    """Height of a prefix tree (a single leaf has height 0)."""
    stack, best = [], 0
    for node in tree:
        depth = stack.pop() if stack else 0
        best = max(best, depth)
        stack.extend([depth + 1] * formula.arity(node))
    return best


def is_valid(tree, pset, limits):
    return (len(tree) <= limits.max_size and height(tree) >= limits.min_height
            and set(pset.required) <= formula.variables_of(tree))


def generate(pset, rng, max_height, full, min_height=0):
    """A random tree no higher than `max_height`: 'full' grows every branch to it, 'grow'
    stops at random; every branch reaches `min_height` in both."""
    # 'grow' picks a leaf with the terminals' share of all primitives, as in Koza's method.
    leaf_share = len(pset.variables) / (len(pset.variables) + len(pset.operators))
    tree = []

    def grow(depth):
        stop = depth >= max_height or (not full and depth >= min_height and rng.random() < leaf_share)
        if stop:
            tree.append(pset.leaf(rng))
            return
        op = rng.choice(pset.operators)
        tree.append(op)
        for _ in range(formula.OPERATORS[op].arity):
            grow(depth + 1)

    grow(0)
    return tree


def ramped_half_and_half(pset, rng, limits):
    """One valid individual: heights ramped over [min_height, init_max_height], half full,
    half grow; drawn again until it fits the limits and contains the required variables."""
    for _ in range(10_000):
        h = rng.randint(limits.min_height, limits.init_max_height)
        tree = generate(pset, rng, h, full=rng.random() < 0.5, min_height=limits.min_height)
        if is_valid(tree, pset, limits):
            return tree
    raise ValueError("could not generate a valid individual in 10,000 tries: check the limits "
                     "and that the operators can reach min_height.")


def crossover(first, second, rng):
    """Swap a random subtree of `first` with a random subtree of `second`: two children."""
    i = rng.randrange(len(first))
    j = rng.randrange(len(second))
    i_end, j_end = formula.subtree_end(first, i), formula.subtree_end(second, j)
    return (first[:i] + second[j:j_end] + first[i_end:],
            second[:j] + first[i:i_end] + second[j_end:])


def subtree_mutation(tree, pset, rng, limits):
    """Replace a random subtree by a new random one (grow, up to `mutation_max_height`)."""
    i = rng.randrange(len(tree))
    new = generate(pset, rng, rng.randint(0, limits.mutation_max_height), full=False)
    return tree[:i] + new + tree[formula.subtree_end(tree, i):]


def one_point_mutation(tree, pset, rng):
    """Replace one node by a random node of the same arity (a leaf by a leaf)."""
    i = rng.randrange(len(tree))
    node = tree[i]
    arity = formula.arity(node)
    if arity == 0:
        replacement = pset.leaf(rng)
    else:
        choices = [op for op in pset.by_arity(arity) if op != node] or [node]
        replacement = rng.choice(choices)
    return tree[:i] + [replacement] + tree[i + 1:]


RATE = check(lambda v: 0.0 <= v <= 1.0, "in [0, 1]", "rate {key} must lie in [0, 1]; got {value!r}.")


@dataclass(frozen=True)
class Rates(Settings):
    crossover: float = field(default=0.8, metadata=RATE)
    subtree_mutation: float = field(default=0.2, metadata=RATE)
    point_mutation: float = field(default=0.2, metadata=RATE)
    archive_use: float = field(default=0.2, metadata=RATE)
    archive_save: float = field(default=0.5, metadata=RATE)
    # parents are drawn by tournament from the (sorted) population
    tournament_size: int = field(default=3, metadata=integer_at_least(1))


def tournament(population, size, rng):
    """The best of `size` random members of a population sorted best first."""
    return population[min(rng.randrange(len(population)) for _ in range(size))]


def vary(population, archive, pset, limits, rates, rng, tries=50):
    """One offspring from a population sorted best first: crossover (one parent from the archive with probability archive_use),
    then subtree and one-point mutation, each with its own rate. Invalid results are drawn
    again; after `tries` a copy of a parent is returned."""
    for _ in range(tries):
        parent = tournament(population, rates.tournament_size, rng)
        child = list(parent)
        if rng.random() < rates.crossover:
            if archive and rng.random() < rates.archive_use:
                mate = rng.choice(archive)
            else:
                mate = tournament(population, rates.tournament_size, rng)
            child = crossover(child, mate, rng)[0]
        if rng.random() < rates.subtree_mutation:
            child = subtree_mutation(child, pset, rng, limits)
        if rng.random() < rates.point_mutation:
            child = one_point_mutation(child, pset, rng)
        if child != parent and is_valid(child, pset, limits):
            return child
    return list(tournament(population, rates.tournament_size, rng))


def select(parents, offspring, mu):
    """(μ+λ) truncation: the μ best of parents and offspring (fitness keys, lower is
    better; ties keep the earlier). Returns (survivors, the rest)."""
    merged = sorted(parents + offspring, key=lambda item: tuple(item["fitness"]))
    return merged[:mu], merged[mu:]


def update_archive(archive, failed, capacity, save_rate, rng):
    """Each individual that failed selection enters with probability `save_rate`; a full
    archive replaces a random member."""
    archive = list(archive)
    for individual in failed:
        if rng.random() < save_rate:
            if len(archive) < capacity:
                archive.append(individual["tree"])
            else:
                archive[rng.randrange(capacity)] = individual["tree"]
    return archive
