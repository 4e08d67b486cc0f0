"""The private names of keras and keras-tuner that the package uses, in one list (PRIVATE): a new
version that removes one fails here, naming it and the module that needs it, instead of deep inside a
training run or a search. The list cannot drift: every `keras.src` / `keras_tuner.src` import of the
package, and every keras-tuner private member that ngl_keras/gp/oracle.py uses or overrides, must be
in it, and no other module imports keras-tuner. Checked against keras 3.15.1 and keras-tuner 1.4.8."""

import ast
import importlib
import re

import keras
import keras_tuner
import pytest
from keras_tuner.engine import base_tuner

from tests.paths import ROOT

pytestmark = pytest.mark.any_backend

ORACLE = "ngl_keras/gp/oracle.py"

# Private name -> (the module that uses it, what for). A name "keras_tuner.Oracle._x" or
# "keras_tuner.BaseTuner._x" is a member of keras-tuner's oracle or tuner (looked up on instances,
# since some are set in __init__ or by the tuner).
PRIVATE = {
    "keras.src.losses.loss.scale_loss_for_distribution":
        ("ngl_keras/losses/base.py", "BatchLoss divides its value by the number of replicas"),
    "keras.src.backend.common.stateless_scope.get_stateless_scope":
        ("ngl_keras/gp/interpreter.py", "InterpretedLoss refuses a program its model's step would not take as state"),
    "keras_tuner.src.distribute.utils.has_chief_oracle": (ORACLE, "role(): is there a chief"),
    "keras_tuner.src.distribute.utils.is_chief_oracle": (ORACLE, "role(): is this process the chief"),
    "keras_tuner.src.distribute.oracle_client.TIMEOUT": (ORACLE, "wait_for_chief: the worker's calls wait bounded"),
    "keras_tuner.src.distribute.oracle_chief.OracleServicer": (ORACLE, "serve: the chief's gRPC servicer"),
    "keras_tuner.src.protos.get_service_grpc": (ORACLE, "serve registers the servicer; wait_for_chief's stub"),
    "keras_tuner.src.protos.get_service": (ORACLE, "wait_for_chief: the request asking for the chief's space"),
    "keras_tuner.Oracle._directory": (ORACLE, "the search directory, where a worker's error.txt is"),
    "keras_tuner.Oracle._get_oracle_fname": (ORACLE, "GPOracle.save writes the oracle's state atomically"),
    "keras_tuner.Oracle._get_trial_dir": (ORACLE, "GPOracle._save_trial writes a trial's state atomically"),
    "keras_tuner.Oracle._save_trial": (ORACLE, "overridden by GPOracle to write a trial's state atomically"),
    "keras_tuner.BaseTuner._try_run_and_update_trial": (ORACLE, "GPTuner.search runs one trial"),
}

PACKAGE_FILES = sorted([*ROOT.glob("ngl_keras/**/*.py"), *ROOT.glob("*.py"), *ROOT.glob("benchmarks/*.py")])
PRIVATE_MODULE = re.compile(r"(keras|keras_tuner)\.src(\.|$)")


class _Tuner(base_tuner.BaseTuner):
    def run_trial(self, trial):
        return {"x": 0.0}


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """keras-tuner's oracle and tuner as the package's search sets them up (the tuner gives the
    oracle its directory)."""
    oracle = keras_tuner.oracles.RandomSearchOracle(objective=keras_tuner.Objective("x", "min"), max_trials=1)
    tuner = _Tuner(oracle=oracle, directory=str(tmp_path_factory.mktemp("tuner")), project_name="p")
    return {"keras_tuner.Oracle": oracle, "keras_tuner.BaseTuner": tuner}


def look_up(name, members):
    """The object `name` names; AttributeError or ImportError when it is gone."""
    owner, _, member = name.rpartition(".")
    if owner in members:
        return getattr(members[owner], member)
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            if cut == 1:
                raise
            continue
        for part in parts[cut:]:
            found = getattr(found, part)
        return found


def _distribution(name):
    return ("keras", keras.__version__) if name.startswith("keras.") else ("keras-tuner", keras_tuner.__version__)


@pytest.mark.parametrize("name", sorted(PRIVATE))
def test_each_private_name_the_package_uses_still_exists(name, members):
    module, purpose = PRIVATE[name]
    try:
        look_up(name, members)
    except (ImportError, AttributeError) as error:
        dist, version = _distribution(name)
        pytest.fail(f"{name} is gone in {dist} {version}: {module} needs it ({purpose}); find its public "
                    f"replacement there, or keep {dist} below {version} in pyproject.toml ({error})",
                    pytrace=False)


def _imported_private_names(text):
    """Full names of the private keras / keras-tuner objects a source text imports: for an imported
    module, each attribute the code reads from it."""
    tree, aliases, names = ast.parse(text), {}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and PRIVATE_MODULE.match(node.module or ""):
            aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if PRIVATE_MODULE.match(a.name)}
    read = {alias: set() for alias in aliases}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in read:
            read[node.value.id].add(node.attr)
    for alias, full in aliases.items():
        names |= {f"{full}.{a}" for a in read[alias]} or {full}
    return names


def _private_members(text):
    """Every `_name` the code reads as an attribute or defines as a method."""
    return {node.attr if isinstance(node, ast.Attribute) else node.name for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.Attribute, ast.FunctionDef))
            and re.fullmatch(r"_[a-z]\w*", node.attr if isinstance(node, ast.Attribute) else node.name)}


def test_the_list_holds_every_private_import_of_the_package():
    used = {}
    for path in PACKAGE_FILES:
        for name in _imported_private_names(path.read_text()):
            used.setdefault(name, []).append(str(path.relative_to(ROOT)))
    missing = {name: where for name, where in used.items() if name not in PRIVATE}
    assert not missing, f"private names used but not in tests/test_private_apis.py's PRIVATE: {missing}"
    listed = {name for name in PRIVATE if ".src." in name}
    assert listed == set(used), f"PRIVATE lists names no module imports any more: {sorted(listed - set(used))}"
    for name, where in used.items():
        assert where == [PRIVATE[name][0]], f"{name} is used in {where}; PRIVATE says {PRIVATE[name][0]}"


def test_only_the_oracle_module_touches_keras_tuner_and_its_private_members_are_listed(members):
    importers = [str(p.relative_to(ROOT)) for p in PACKAGE_FILES
                 if re.search(r"^\s*(import|from)\s+keras_tuner\b", p.read_text(), re.M)]
    assert importers == [ORACLE]
    # Every _name the module reads or defines that keras-tuner's oracle or tuner also has is one of
    # theirs (a read, or an override).
    names = _private_members((ROOT / ORACLE).read_text())
    theirs = {f"{owner}.{name}" for name in names for owner, instance in members.items() if hasattr(instance, name)}
    listed = {name for name in PRIVATE if name.rpartition(".")[0] in members}
    assert theirs == listed, (f"keras-tuner members used by {ORACLE} but not in PRIVATE: {sorted(theirs - listed)}; "
                              f"listed but no longer used: {sorted(listed - theirs)}")
    for path in PACKAGE_FILES:
        if str(path.relative_to(ROOT)) != ORACLE:
            other = _private_members(path.read_text())
            used = [name for name in listed if name.rpartition(".")[2] in other]
            assert not used, f"{path.relative_to(ROOT)} uses keras-tuner's private {used}: only {ORACLE} may"
