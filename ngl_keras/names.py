"""The registries' names without Keras: every loss (its source, the arguments it takes, what its
name fixes) and every model (its smallest image and its channels), with the checks a command line
or a config needs, so that a mistake is answered before any framework loads.

The registries build on these tables (`ngl_keras.losses.REGISTRY` adds each loss's Keras class,
`ngl_keras.models.MODELS` each backbone); the datasets' names are `ngl_keras.data.registry.DATASETS`,
which needs no Keras either. Names are case-insensitive: `CE` is `ce` everywhere (a table's label
included). A loss's arguments can be given with its name, `ngl(alpha=3.0)`: literal values only
(`ast.literal_eval`, never `eval`).
"""

import ast
import difflib
import re
from dataclasses import dataclass, field

from ngl_keras.settings import shown

# A loss's arguments as a config writes them, named in every error about them.
YAML_FORM = "losses: [{name: ngl, alpha: 3.0}]"
COMMAND_FORM = '--losses ce "ngl(alpha=3.0)" "sce(alpha=0.1, beta=1.0)"'
_KERAS_CE = ("from_logits", "label_smoothing", "axis", "reduction", "name", "dtype")
_ANYLOSS = ("metric", "beta", "L", "average", "from_logits", "epsilon", "threshold", "reduction", "name", "dtype")


@dataclass(frozen=True)
class LossName:
    """A registered loss without its class: where it comes from, the arguments its class takes
    besides ignore_class (tests/test_names.py checks them against the class), what the name fixes,
    its kernel L2."""

    source: str
    arguments: tuple
    fixed: dict = field(default_factory=dict)
    kernel_l2: float = 0.0  # default L2 strength on the model's kernels (then `l2` is an argument)

    def accepted(self):
        """Every argument the name takes: its class's, less what it fixes, with ignore_class and l2."""
        return tuple(a for a in self.arguments if a not in self.fixed) + ("ignore_class",) + (
            ("l2",) if self.kernel_l2 else ())


LOSSES = {
    "ce": LossName("categorical cross entropy (Keras; one-hot labels)", _KERAS_CE),
    "sparse_ce": LossName("categorical cross entropy (Keras; integer labels)",
                          ("from_logits", "reduction", "axis", "name", "dtype")),
    # CE + L2: the loss is CE; the model builder puts `l2` on every kernel. Strength unknown
    # in the paper: 1e-4 is our default, the configs say so.
    "ce_l2": LossName("CE with L2 weight regularisation on the kernels (paper baseline)", _KERAS_CE, kernel_l2=1e-4),
    "focal": LossName("focal loss, Lin et al. 2017 (Keras; one-hot labels)", ("alpha", "gamma", *_KERAS_CE)),
    "ngl": LossName("Next Generation Loss, Akhmedova & Körber 2024",
                    ("alpha", "from_logits", "scaling", "reduction", "name", "dtype")),
    "sce": LossName("symmetric cross entropy, Wang et al. 2019",
                    ("alpha", "beta", "A", "from_logits", "reduction", "name", "dtype")),
    "dice": LossName("multi-class soft Dice (batch-level)", ("smooth", "from_logits", "reduction", "name", "dtype")),
    "bi_tempered": LossName("bi-tempered logistic loss, Amid et al. 2019",
                            ("t1", "t2", "num_iters", "label_smoothing", "reduction", "name", "dtype")),
    "anyloss": LossName("AnyLoss, Han et al. 2024 (batch-level)", _ANYLOSS),
    "anyloss_accuracy": LossName("AnyLoss of accuracy", _ANYLOSS, {"metric": "accuracy"}),
    "anyloss_f1": LossName("AnyLoss of F1", _ANYLOSS, {"metric": "fbeta", "beta": 1.0}),
    "anyloss_fbeta": LossName("AnyLoss of F-beta", _ANYLOSS, {"metric": "fbeta"}),
    "anyloss_gmean": LossName("AnyLoss of G-mean", _ANYLOSS, {"metric": "gmean"}),
    "anyloss_balanced_accuracy": LossName("AnyLoss of balanced accuracy", _ANYLOSS, {"metric": "balanced_accuracy"}),
}


@dataclass(frozen=True)
class ModelName:
    """A registered model without its backbone: the smallest image side it takes and the channels
    it expects (3: grey images are repeated)."""

    min_size: int
    channels: int


MODELS = {
    "inceptionv3": ModelName(75, 3),
    "resnet50": ModelName(32, 3),
    "small_cnn": ModelName(16, 1),
    "resnet101": ModelName(32, 3),
    "resnet152": ModelName(32, 3),
    "swin_t": ModelName(32, 3),
    "swin_s": ModelName(32, 3),
    "tiny_swin": ModelName(16, 3),  # for the tests only
    "tiny_resnet": ModelName(16, 3),  # for the tests only
}


def image_size_error(model, size, dataset=None):
    """The message for an image side below registered `model`'s smallest, naming the config key."""
    least = MODELS[model].min_size
    where = f"settings: {{{dataset}: {{image_size: {least}}}}}" if dataset else f"image_size: {least}"
    return (f"image size {shown(size)} is below {model}'s minimum of {least} px; set image_size >= {least} in the "
            f"config ({where}), or choose another model (--models).")


def did_you_mean(name, known):
    close = difflib.get_close_matches(str(name).lower(), list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def registered(name, table):
    """The registered spelling of `name` in `table` (case-insensitive), or None."""
    key = name.strip().lower() if isinstance(name, str) else None
    return key if key in table else None


def model_name(name, flag="--models", key="models"):
    """A model's registered name, or a ValueError naming the known ones."""
    found = registered(name, MODELS)
    if found is None:
        raise ValueError(f"unknown model {shown(name)}{did_you_mean(name, MODELS)}; known models: "
                         f"{', '.join(sorted(MODELS))} ({flag} or the config's {key}).")
    return found


def dataset_name(name, known):
    """A dataset's registered name when `name` is one of `known` in other capitals; else `name`
    (another tfds dataset, looked up later in the data directory)."""
    return registered(name, known) or name


_CALL = re.compile(r"^\s*([A-Za-z_]\w*)\s*\(")


def _is_formula(text):
    return any(ch in text for ch in "()+-*/^ ")


def parse_loss(text):
    """(label, registry name or formula, arguments) of a loss as a command line or a config's list
    gives it: a registered name in any capitals (labelled by its registered name), `name(key=value,
    ...)` with literal values (labelled as written), or a formula over p and y (as written)."""
    if not isinstance(text, str):
        raise ValueError(f"a loss must be a registry name, a formula, or a mapping with 'name'; got {shown(text)}.")
    name = registered(text, LOSSES)
    if name is not None:
        return name, name, {}
    call = _CALL.match(text)
    if call and registered(call.group(1), LOSSES):
        name = registered(call.group(1), LOSSES)
        return text.strip(), name, _call_arguments(text, name)
    if not _is_formula(text):
        raise ValueError(f"unknown loss {shown(text)}{did_you_mean(text, LOSSES)}; known losses: "
                         f"{', '.join(sorted(LOSSES))}, or a formula over p and y such as 'exp(p) - y*p'.")
    return text, text, {}


def _call_arguments(text, name):
    usage = (f"give a loss's arguments as NAME(KEY=VALUE, ...) with literal values, e.g. {COMMAND_FORM}, "
             f"or in a config {YAML_FORM}")
    try:
        call = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError(f"loss {shown(text)} cannot be read: {usage}.") from None
    if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
        raise ValueError(f"loss {shown(text)} cannot be read: {usage}.")
    arguments = {}
    for keyword in call.keywords:
        try:
            arguments[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:
            raise ValueError(f"loss {shown(text)}: {keyword.arg}={ast.unparse(keyword.value)} is not a literal "
                             f"(a number, a string in quotes, True/False/None): {usage}.") from None
    check_arguments(name, arguments, text)
    return arguments


def check_arguments(name, arguments, label=None):
    """A ValueError naming an argument registered loss `name` does not take, and the YAML form."""
    entry = LOSSES[name]
    for argument in arguments:
        if argument in entry.fixed:
            raise ValueError(f"loss {shown(label or name)} fixes {argument}={entry.fixed[argument]!r}; use 'anyloss' "
                             f"to set it (in a config: losses: [{{name: anyloss, {argument}: ...}}]).")
        if argument not in entry.accepted():
            raise ValueError(f"loss {shown(label or name)} does not accept {[argument]}"
                             f"{did_you_mean(argument, entry.accepted())}; it takes "
                             f"{', '.join(entry.accepted())} (in a config: {YAML_FORM}).")


def check_loss(item):
    """A grid's loss entry (a string or a mapping with 'name'), checked without Keras: the name,
    the arguments' names, a formula's syntax. Returns the entry with the name registered."""
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        name = registered(item["name"], LOSSES)
        arguments = {k: v for k, v in item.items() if k not in ("name", "label")}
        if name is None:
            parse_loss(item["name"])  # unknown: the error; a formula takes no arguments
            if arguments:
                raise ValueError(f"loss {shown(item['name'])} is a formula: it takes no arguments; got {sorted(arguments)}.")
            return item
        check_arguments(name, arguments)
        return {**item, "name": name}
    label, name, arguments = parse_loss(item)
    if name not in LOSSES:
        from ngl_keras import formula  # the formula language: plain Python, no Keras

        formula.parse(name)
        return item
    return {"name": name, "label": label, **arguments} if arguments else name
