"""The published figures: every headline number of README.md and docs/BENCHMARKS.md listed in
benchmarks/claims.yaml is recomputed from its record in benchmarks/results/ and must appear in its
document exactly as the record gives it.

A claim is data: the document, the text as printed, the record, and one or more computations
whose numbers, put into `format`, give that text. A claim fails when the record gives another text
(the record changed, or the text was never what it says) or when the document no longer holds the
text (the figure was edited, or moved without its claim). Reads records only: no Keras, no training.
"""

import itertools
import json
import re
import string
from pathlib import Path

import numpy as np
import pytest
import yaml

from ngl_keras import report
from tests.paths import ROOT

CLAIMS = ROOT / "benchmarks" / "claims.yaml"
MINUS = "\u2212"  # the documents print negative numbers with the minus sign, not the hyphen


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def last_json(path):
    """A JSON file, or the last line of a text record that is a JSON object."""
    text = Path(path).read_text()
    if path.suffix == ".json":
        return json.loads(text)
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def at(value, path):
    """`value` at a dotted path: keys of a dict, integer indices or `start:` slices of a list."""
    for part in str(path).split(".") if path != "" else []:
        if isinstance(value, list):
            value = value[int(part[:-1]):] if part.endswith(":") else value[int(part)]
        else:
            value = value[part]
    return value


REDUCE = {"min": np.min, "max": np.max, "median": np.median, "mean": np.mean, "count": len,
          "sum": lambda v: np.sum(list(v.values()) if isinstance(v, dict) else v)}


def reduced(value, how):
    return [float(REDUCE[h](value)) for h in how] if how else [float(value)]


# The computations: each takes its parameters and the record's path, and returns a list of numbers.

def runs(record, loss, seeds=None, metric="test_accuracy"):
    """{seed: test accuracy (or the record's `metric`) in %} of the finished runs of `loss`."""
    return {r["seed"]: 100 * r[metric] for r in read_jsonl(record)
            if r["loss"] == loss and r["status"] == "ok" and (seeds is None or r["seed"] in seeds)}


def mean_std(record, loss, seeds=None, metric="test_accuracy"):
    """Test accuracy % (or `metric` %): mean and sample standard deviation over seeds (0 for one seed)."""
    values = list(runs(record, loss, seeds, metric).values())
    return [np.mean(values), np.std(values, ddof=1) if len(values) > 1 else 0.0]


def per_seed(record, loss, seeds=None, metric="test_accuracy"):
    """Test accuracy % (or `metric` %) of each seed, in seed order."""
    by_seed = runs(record, loss, seeds, metric)
    return [by_seed[s] for s in sorted(by_seed)]


def paired_difference(record, loss, metric="test_accuracy", baseline="ce"):
    """`metric` % of `loss` minus the baseline's, seed by seed: mean and 95 % half-width (t)."""
    mine, base = runs(record, loss, metric=metric), runs(record, baseline, metric=metric)
    _, mean, half = report.mean_interval([mine[s] - base[s] for s in sorted(set(mine) & set(base))])
    return [mean, half]


def change(record, loss, baseline="ce", seeds=None):
    """% change of the mean against the baseline's mean over the seeds both finished."""
    mine, base = runs(record, loss, seeds), runs(record, baseline, seeds)
    paired = sorted(set(mine) & set(base))
    return [report.percent_change(np.mean([mine[s] for s in paired]), np.mean([base[s] for s in paired]))]


def per_seed_change(record, loss, baseline="ce"):
    """% change against the baseline, seed by seed."""
    mine, base = runs(record, loss), runs(record, baseline)
    return [report.percent_change(mine[s], base[s]) for s in sorted(set(mine) & set(base))]


def each_run(record, losses, metric, reduce):
    """`metric` % of every finished run of any of `losses`, reduced (min, max, ...)."""
    return reduced([v for loss in losses for v in runs(record, loss, metric=metric).values()], reduce)


def one_class(record, loss):
    """Of the finished runs of `loss`: how many predict one class only on the test set (a positive rate
    of 0 or 100 %), and how many there are."""
    rates = runs(record, loss, metric="test_positive_rate").values()
    return [sum(rate in (0.0, 100.0) for rate in rates), len(rates)]


def paired(record, loss, baseline="ce", metric="test_accuracy"):
    """The report's paired statistics of the % changes of `metric`: mean, 95 % interval low and high, sd,
    half-width."""
    changes = report.paired_changes(read_jsonl(record), baseline, metric)
    [key] = [k for k in changes if k[2] == loss]
    stats = report.paired_statistics(changes[key])
    return [stats["mean"], stats["low"], stats["high"], float(np.std(changes[key], ddof=1)), stats["detectable"]]


def proxy(record, loss):
    """A loss's proxy runs (proxy.jsonl): mean training %, mean validation %, fitness (1 − validation),
    then each run's validation %."""
    entries = [e for e in read_jsonl(record) if e["loss"] == loss]
    val = [e["val_accuracy"] for e in entries]
    return [100 * np.mean([e["train_accuracy"] for e in entries]), 100 * np.mean(val), 1 - np.mean(val),
            *[100 * v for v in val]]


def _ranks(record, pairs):
    """The ranks of proxy validation accuracy (RECORD/proxy.jsonl) and of full-data test accuracy
    (RECORD/full/runs.jsonl) over `pairs` of [proxy loss, full-data loss]."""
    record = Path(record)
    proxy_val = [proxy(record / "proxy.jsonl", p)[1] for p, _ in pairs]
    full = [np.mean(list(runs(record / "full" / "runs.jsonl", f).values())) for _, f in pairs]
    return report_ranks(proxy_val), report_ranks(full)


def spearman(record, pairs):
    """Spearman's ρ between proxy validation accuracy and full-data test accuracy (see `_ranks`)."""
    proxy_ranks, full_ranks = _ranks(record, pairs)
    return [float(np.corrcoef(proxy_ranks, full_ranks)[0, 1])]


def spearman_chance(record, pairs):
    """The chance level of spearman(record, pairs), by enumeration: the share of all orderings of the
    full-data accuracies whose ρ with the proxy's reaches the observed one."""
    proxy_ranks, full_ranks = _ranks(record, pairs)
    rhos = np.array([np.corrcoef(proxy_ranks, full_ranks[list(order)])[0, 1]
                     for order in itertools.permutations(range(len(pairs)))])
    observed = np.corrcoef(proxy_ranks, full_ranks)[0, 1]
    return [float(np.mean(rhos >= observed - 1e-9))]


def _number(record, computation):
    """One number of another computation (see `evaluate`): the `pick`-th, the first by default."""
    return evaluate(computation, record)[computation.get("pick", 0)]


def difference(record, a, b):
    """a − b, each one number of another computation given as a claim lists them (see `_number`)."""
    return [_number(record, a) - _number(record, b)]


def ratio(record, a, b):
    """a / b, each one number of another computation (see `_number`)."""
    return [_number(record, a) / _number(record, b)]


def report_ranks(values):
    """Ranks 1..n, ties sharing their mean rank."""
    values = np.asarray(values, dtype=float)
    return np.array([np.sum(values < v) + (np.sum(values == v) + 1) / 2 for v in values])


def field(record, key, reduce=None, loss=None):
    """A field of a JSON record (or of a text record's last JSON line, or of the row of `loss` in a
    JSON-lines record), optionally reduced (min, max, median, mean, sum, count)."""
    record = Path(record)
    if loss is not None:
        [data] = [r for r in read_jsonl(record) if r["loss"] == loss]
    else:
        data = last_json(record)
    return reduced(at(data, key), reduce)


def _line_value(line, key):
    """`key` of one JSON line (a list of keys: their sum; a dict value: the sum of its values)."""
    if isinstance(key, list):
        return sum(_line_value(line, k) for k in key)
    value = at(line, key)
    return float(sum(value.values()) if isinstance(value, dict) else value)


def column(record, key, reduce=("sum",), lines=None):
    """`key` of every line of a JSON-lines record (or of the `lines` "start:stop" slice of them, counted
    from 0), reduced (sum by default)."""
    chosen = read_jsonl(record)
    if lines is not None:
        chosen = chosen[slice(*[int(x) if x else None for x in lines.split(":")])]
    return reduced([_line_value(line, key) for line in chosen], reduce)


def share(record, part, whole):
    """The sum of `part` over a JSON-lines record's lines against the sum of `whole`, in %."""
    lines = read_jsonl(record)
    return [100.0 * sum(_line_value(x, part) for x in lines) / sum(_line_value(x, whole) for x in lines)]


def row(record, index, keys):
    """Fields of row `index` of a JSON-lines record (dict values are summed, lists give their first)."""
    data = read_jsonl(record)[index]
    out = []
    for key in keys:
        value = at(data, key)
        out.append(float(sum(value.values()) if isinstance(value, dict)
                                 else value[0] if isinstance(value, list) else value))
    return out


def text(record, pattern, after=None, before=None, reduce=None):
    """Numbers matched by `pattern` (each of its groups) in a text record, between the markers
    `after` and `before` when given; all of them, or reduced (min, max, ...)."""
    body = Path(record).read_text()
    if after is not None:
        body = body[body.index(after) + len(after):]
    if before is not None:
        body = body[:body.index(before)]
    matches = [m if isinstance(m, tuple) else (m,) for m in re.findall(pattern, body)]
    values = [float(group.replace(",", "")) for match in matches for group in match]
    assert values, f"{pattern!r} matches nothing in {record}"
    return [v for h in reduce for v in reduced(values, [h])] if reduce else values


COMPUTATIONS = {f.__name__: f for f in (mean_std, per_seed, paired_difference, change, per_seed_change, each_run,
                                        one_class, paired, proxy, spearman, spearman_chance, difference, ratio,
                                        field, column, share, row, text)}


class _Printed(string.Formatter):
    """str.format as the documents print numbers: a negative number with the minus sign."""

    def format_field(self, value, spec):
        out = super().format_field(value, spec)
        return out.replace("-", MINUS) if isinstance(value, (int, float, np.floating)) else out


def load_claims():
    claims = yaml.safe_load(CLAIMS.read_text())
    for claim in claims:
        unknown = {c["of"] for c in claim["values"]} - set(COMPUTATIONS)
        assert not unknown, f"claim {claim['text']!r}: unknown computation {unknown}; known: {sorted(COMPUTATIONS)}"
    return claims


def evaluate(computation, record):
    """The numbers of one computation as a claim lists it (`of`, its parameters, optionally `scale`
    and its own `record`, else `record`); `pick` is read by `_number`."""
    params = {k: v for k, v in computation.items() if k not in ("of", "record", "scale", "pick")}
    path = ROOT / computation["record"] if "record" in computation else record
    return [computation.get("scale", 1.0) * float(v) for v in COMPUTATIONS[computation["of"]](path, **params)]


def recompute(claim):
    """The claim's text as its record gives it."""
    numbers = [n for computation in claim["values"] for n in evaluate(computation, ROOT / claim["record"])]
    return _Printed().format(claim["format"], *numbers)


def normalised(value):
    """Whitespace runs as one space: a figure may wrap across lines in a document."""
    return " ".join(value.split())


CLAIM_LIST = load_claims()


@pytest.mark.any_backend
@pytest.mark.parametrize("claim", CLAIM_LIST, ids=[f"{c['doc']}: {c['text'][:40]}" for c in CLAIM_LIST])
def test_published_figure_is_what_its_record_gives(claim):
    assert (ROOT / claim["record"]).exists(), f"{claim['record']} is not in the checkout"
    recomputed = recompute(claim)
    assert recomputed == claim["text"], f"{claim['record']} gives {recomputed!r}, the claim says {claim['text']!r}"
    printed = normalised(claim["text"]) in normalised((ROOT / claim["doc"]).read_text())
    assert printed, f"{claim['doc']} no longer prints {claim['text']!r} (its record gives exactly that)"


@pytest.mark.any_backend
def test_claims_cover_every_headline_section():
    docs = {c["doc"] for c in CLAIM_LIST}
    assert docs == {"README.md", "docs/BENCHMARKS.md"}
    records = {c["record"].split("/")[2] for c in CLAIM_LIST}
    assert {"quality-quick", "quality-long15", "search-quality", "calibration-overhead", "interpreter",
            "search-throughput", "time-to-error", "imagenet-step", "gpu-h100"} <= records


@pytest.mark.any_backend
def test_printed_numbers_use_the_minus_sign_and_the_computations_hold():
    assert _Printed().format("{:+.2f} {:.2f} {}", -0.591, 1.0, "a-b") == f"{MINUS}0.59 1.00 a-b"
    assert report_ranks([7, 7, 9]).tolist() == [1.5, 1.5, 3.0]
    assert at({"a": [1, {"b": 2}]}, "a.1.b") == 2 and at({"a": [1, 2, 3]}, "a.1:") == [2, 3]
