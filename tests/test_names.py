"""The registries' names without Keras (ngl_keras.names): the table agrees with the loss classes,
names are case-insensitive, `ngl(alpha=3.0)` is read without eval, and every error names what is
accepted and the config form."""

import inspect

import pytest

from ngl_keras import names


def test_the_names_table_is_the_registry_and_agrees_with_the_classes():
    from ngl_keras import losses, models

    assert set(names.LOSSES) == set(losses.REGISTRY) and set(names.MODELS) == set(models.MODELS)
    for name, entry in losses.REGISTRY.items():
        taken = tuple(p for p in inspect.signature(entry.build).parameters if p not in ("self", "kwargs", "ignore_class"))
        assert names.LOSSES[name].arguments == taken, name
        assert (entry.source, entry.fixed, entry.kernel_l2) == (
            names.LOSSES[name].source, names.LOSSES[name].fixed, names.LOSSES[name].kernel_l2)
    assert models.MODELS["resnet50"].min_size == names.MODELS["resnet50"].min_size == 32


@pytest.mark.parametrize("given, checked", [
    ("CE", "ce"), ("NGL", "ngl"), (" Anyloss_F1", "anyloss_f1"),
    ("ngl(alpha=3.0)", {"name": "ngl", "label": "ngl(alpha=3.0)", "alpha": 3.0}),
    ("SCE(alpha=0.1, beta=1.0)", {"name": "sce", "label": "SCE(alpha=0.1, beta=1.0)", "alpha": 0.1, "beta": 1.0}),
    ("anyloss(metric='gmean')", {"name": "anyloss", "label": "anyloss(metric='gmean')", "metric": "gmean"}),
    ("exp(p) - y*p", "exp(p) - y*p"),
    ({"name": "NGL", "alpha": 3.0}, {"name": "ngl", "alpha": 3.0}),
])
def test_a_loss_is_checked_and_named_as_registered(given, checked):
    assert names.check_loss(given) == checked


@pytest.mark.parametrize("given, message", [
    ("cee", "unknown loss 'cee' (did you mean 'ce'?); known losses: anyloss, "),
    ("ngl(alhpa=3.0)", "loss 'ngl(alhpa=3.0)' does not accept ['alhpa'] (did you mean 'alpha'?); it takes alpha, "
                       "from_logits, scaling, reduction, name, dtype, ignore_class (in a config: losses: "
                       "[{name: ngl, alpha: 3.0}])."),
    ("ngl(alpha=__import__('os'))", "alpha=__import__('os') is not a literal"),
    ("ngl(3.0)", "cannot be read: give a loss's arguments as NAME(KEY=VALUE, ...)"),
    ("sce(alpha=0.1, beta=)", "or in a config losses: [{name: ngl, alpha: 3.0}]."),
    ("anyloss_f1(beta=2.0)", "loss 'anyloss_f1(beta=2.0)' fixes beta=1.0; use 'anyloss'"),
    ("exp(p) -", "exp(p) -"),
])
def test_a_bad_loss_is_one_line_naming_what_is_accepted(given, message):
    with pytest.raises(ValueError) as raised:
        names.check_loss(given)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_models_and_datasets_in_any_capitals():
    from ngl_keras.data.registry import known_name

    assert names.model_name("ResNet50") == "resnet50" and known_name("Fashion_MNIST") == "fashion_mnist"
    with pytest.raises(ValueError, match=r"unknown model 'resnet5' \(did you mean 'resnet50'\?\); known models"):
        names.model_name("resnet5")
    with pytest.raises(ValueError, match=r"unknown dataset 'fashionmnist' \(did you mean 'fashion_mnist'\?\)"):
        known_name("fashionmnist", "/nonexistent")


@pytest.mark.any_backend
def test_the_registry_builds_the_arguments_given_with_the_name():
    from ngl_keras import losses
    from ngl_keras.grid import LossSpec

    assert losses.get("NGL(alpha=3.0)").get_config()["alpha"] == 3.0
    assert losses.kernel_l2("ce_l2(l2=0.01)") == 0.01
    spec = LossSpec.parse("sce(alpha=0.1, beta=1.0)")
    assert (spec.label, spec.name, spec.kwargs) == ("sce(alpha=0.1, beta=1.0)", "sce", {"alpha": 0.1, "beta": 1.0})
    assert LossSpec.parse("CE").label == "ce"  # the table finds its baseline
