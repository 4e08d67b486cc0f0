"""What every loss must do as a Keras 3 loss: config, saving, label forms, dtypes, XLA, finiteness."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ngl_keras
from ngl_keras import losses
from tests import reference

NGL_FORMULA = "exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))"
RNG = np.random.default_rng(3)

# Every constructor argument with a non-default value.
NON_DEFAULT = {
    "ngl": lambda: ngl_keras.NGL(alpha=2.0, from_logits=True, scaling=True, reduction="sum", name="n1"),
    "sce": lambda: ngl_keras.SymmetricCrossEntropy(alpha=6.0, beta=0.1, A=-9.21, from_logits=True,
                                                   reduction="sum", name="s1"),
    "dice": lambda: ngl_keras.SoftDice(smooth=0.5, from_logits=True, name="d1"),
    "bi_tempered": lambda: ngl_keras.BiTemperedLogisticLoss(t1=0.7, t2=1.3, num_iters=7,
                                                            label_smoothing=0.1, reduction="sum",
                                                            name="b1"),
    "anyloss": lambda: ngl_keras.AnyLoss(metric="gmean", beta=2.0, L=20.0, average="micro",
                                         from_logits=True, epsilon=1e-5, name="a1"),
    "expression": lambda: ngl_keras.ExpressionLoss("p*(1-y) + sqrt(y/p)", epsilon=1e-4,
                                                   reduction="sum", name="e1"),
}

# Ours, with how each takes predictions: probabilities or logits.
OURS = {
    "ngl": (lambda: ngl_keras.NGL(), "probs"),
    "ngl_logits": (lambda: ngl_keras.NGL(from_logits=True), "logits"),
    "sce": (lambda: ngl_keras.SymmetricCrossEntropy(), "probs"),
    "dice": (lambda: ngl_keras.SoftDice(), "probs"),
    "bi_tempered": (lambda: ngl_keras.BiTemperedLogisticLoss(t1=0.8, t2=1.2), "logits"),
    "bi_tempered_t2_below_1": (lambda: ngl_keras.BiTemperedLogisticLoss(t1=0.5, t2=0.8), "logits"),
    "bi_tempered_ce": (lambda: ngl_keras.BiTemperedLogisticLoss(), "logits"),
    "anyloss_f1": (lambda: ngl_keras.AnyLoss(), "probs"),
    "anyloss_gmean_micro": (lambda: ngl_keras.AnyLoss(metric="gmean", average="micro"), "probs"),
    "anyloss_bacc_logits": (lambda: ngl_keras.AnyLoss(metric="balanced_accuracy", from_logits=True),
                            "logits"),
    "expression_ngl": (lambda: ngl_keras.ExpressionLoss(NGL_FORMULA), "probs"),
    "expression_protected": (lambda: ngl_keras.ExpressionLoss("log(p)*y + sqrt(p)/(y - p)"), "probs"),
}


def predictions(kind, shape):
    logits = RNG.normal(size=shape).astype("float32") * 2
    if kind == "logits":
        return logits
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("name", sorted(NON_DEFAULT))
def test_config_round_trip_keeps_every_argument(name):
    loss = NON_DEFAULT[name]()
    config = loss.get_config()
    rebuilt = type(loss).from_config(config)
    assert rebuilt.get_config() == config
    serialized = keras.saving.serialize_keras_object(loss)
    again = keras.saving.deserialize_keras_object(serialized)
    assert type(again) is type(loss) and again.get_config() == config
    y = RNG.integers(0, 4, 8)
    p = predictions("logits", (8, 4))
    assert float(again(y, p)) == pytest.approx(float(loss(y, p)), rel=1e-6)


def test_config_carries_constructor_arguments_by_name():
    config = NON_DEFAULT["anyloss"]().get_config()
    assert {k: config[k] for k in ("metric", "beta", "L", "average", "from_logits", "epsilon")} == {
        "metric": "gmean", "beta": 2.0, "L": 20.0, "average": "micro", "from_logits": True,
        "epsilon": 1e-5}
    assert NON_DEFAULT["expression"]().get_config()["formula"] == "p*(1-y) + sqrt(y/p)"


@pytest.mark.parametrize("name", losses.names() + [NGL_FORMULA])
def test_model_with_each_registered_loss_saves_and_loads_without_custom_objects(name, tmp_path):
    sparse = name == "sparse_ce"
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="softmax")])
    loss = losses.get(name)
    model.compile(optimizer="sgd", loss=loss)
    x = RNG.normal(size=(8, 3)).astype("float32")
    y = RNG.integers(0, 4, 8) if sparse else np.eye(4, dtype="float32")[RNG.integers(0, 4, 8)]
    before = model.evaluate(x, y, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.loss) is type(loss)
    assert loaded.loss.get_config() == loss.get_config()
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(before, rel=1e-6)


@pytest.mark.parametrize("name", sorted(OURS))
def test_integer_and_one_hot_labels_give_the_same_value_for_any_rank(name):
    build, kind = OURS[name]
    loss = build()
    for shape in ((6,), (3, 4, 5)):  # classification (B,) and segmentation (B, H, W)
        labels = RNG.integers(0, 5, size=shape)
        one_hot = np.eye(5, dtype="float32")[labels]
        p = predictions(kind, shape + (5,))
        expected = float(loss(one_hot, p))
        assert float(loss(labels, p)) == pytest.approx(expected, rel=1e-6, abs=1e-7)
        assert float(loss(labels[..., None], p)) == pytest.approx(expected, rel=1e-6, abs=1e-7)
        assert np.isfinite(expected)


@pytest.mark.parametrize("name", ["ngl", "sce", "bi_tempered", "expression_ngl"])
def test_per_sample_losses_return_one_value_per_example_and_position(name):
    build, kind = OURS[name]
    config = build().get_config()
    config["reduction"] = None
    loss = type(build()).from_config(config)
    p = predictions(kind, (2, 3, 4, 5))
    assert tuple(loss(RNG.integers(0, 5, (2, 3, 4)), p).shape) == (2, 3, 4)


@pytest.mark.parametrize("name", ["ngl", "sce", "expression_ngl"])
def test_sample_weight_comes_from_keras(name):
    build, kind = OURS[name]
    config = build().get_config()
    config["reduction"] = None
    p = predictions(kind, (4, 3))
    per_sample = np.asarray(type(build()).from_config(config)(np.arange(4) % 3, p))
    assert per_sample.shape == (4,) and len(set(np.round(per_sample, 6))) == 4  # weights can tell
    w = np.array([0.0, 1.0, 2.0, 0.5], "float32")
    expected = float(np.sum(per_sample * w) / 4)
    assert expected != pytest.approx(float(np.mean(per_sample)), rel=1e-3)
    assert float(build()(np.arange(4) % 3, p, sample_weight=w)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", sorted(OURS))
def test_mixed_precision_predictions_are_computed_in_float32(name, dtype):
    build, kind = OURS[name]
    loss = build()
    labels = RNG.integers(0, 5, 32)
    p32 = predictions(kind, (32, 5))
    low = tf.cast(p32, dtype)
    value = loss(labels, low)
    assert value.dtype == tf.float32
    reference = float(loss(labels, tf.cast(low, tf.float32)))
    assert np.isfinite(float(value))
    assert float(value) == pytest.approx(reference, rel=1e-2, abs=1e-6)
    assert float(value) == pytest.approx(float(loss(labels, p32)), rel=1e-2, abs=1e-3)


# Extreme predictions: certain and right, certain and wrong, exactly 0 and 1, nearly certain, uniform.
EXTREME_P = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1e-7, 1 - 2e-7, 1e-7], [1 / 3] * 3], dtype="float32")
EXTREME_Y = np.array([0, 0, 1, 1, 2])


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_under_a_mixed_policy_ngl_gives_its_formula_at_extreme_inputs_and_training_lowers_it(policy):
    """NGL = mean of exp(2.4092 - p(1+y)) - cos(cos(sin p)) (tests/reference.py, float64 numpy), from
    half-precision predictions, at extreme inputs and for a model's own predictions; and training
    under the policy lowers it."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        compute = keras.mixed_precision.dtype_policy().compute_dtype
        value = float(ngl_keras.NGL()(EXTREME_Y, keras.ops.cast(EXTREME_P, compute)))
        expected = reference.ngl_published_tf(np.eye(3)[EXTREME_Y], EXTREME_P.astype("float64"))
        assert value == pytest.approx(expected, rel=1e-2)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(3), keras.layers.Activation("softmax", dtype="float32")])
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss=ngl_keras.NGL())
        x, y = RNG.normal(size=(16, 6)).astype("float32"), RNG.integers(0, 3, 16)
        before = model.evaluate(x, y, verbose=0)
        predicted = model.predict(x, verbose=0).astype("float64")
        assert before == pytest.approx(reference.ngl_published_tf(np.eye(3)[y], predicted), rel=1e-2)
        model.fit(x, y, epochs=5, verbose=0)
        assert model.evaluate(x, y, verbose=0) < before
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name", sorted(OURS))
def test_runs_in_an_xla_compiled_train_step(name):
    build, kind = OURS[name]
    keras.utils.set_random_seed(0)
    activation = "linear" if kind == "logits" else "softmax"
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation=activation)])
    loss = build()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss, jit_compile=True)
    x = RNG.normal(size=(16, 4)).astype("float32")
    y = RNG.integers(0, 5, 16)
    before = float(loss(y, model.predict(x, verbose=0)))
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    # The reported loss of the single step is the loss before its update.
    assert history.history["loss"][0] == pytest.approx(before, rel=1e-4)
    assert float(loss(y, model.predict(x, verbose=0))) < before


probability_rows = hnp.arrays(
    np.float32, (6, 4),
    elements=st.one_of(st.just(0.0), st.just(1.0), st.floats(0, 1, width=32)),
).map(lambda a: a / np.maximum(a.sum(-1, keepdims=True), 1e-30))
logit_rows = hnp.arrays(
    np.float32, (6, 4),
    elements=st.one_of(st.just(1e4), st.just(-1e4), st.floats(-50, 50, width=32)),
)


def _value_and_gradient(loss, labels, p):
    p = tf.Variable(p)
    with tf.GradientTape() as tape:
        value = loss(labels, p)
    return float(value), tape.gradient(value, p).numpy()


@given(probability_rows, hnp.arrays(np.int64, (6,), elements=st.integers(0, 3)))
def test_values_and_gradients_are_finite_on_any_probabilities(p, labels):
    for name, (build, kind) in OURS.items():
        if kind == "probs":
            value, grad = _value_and_gradient(build(), labels, p)
            assert np.isfinite(value) and np.all(np.isfinite(grad)), name


@given(logit_rows, hnp.arrays(np.int64, (6,), elements=st.integers(0, 3)))
def test_values_and_gradients_are_finite_on_any_logits(z, labels):
    for name, (build, kind) in OURS.items():
        if kind == "logits":
            value, grad = _value_and_gradient(build(), labels, z)
            assert np.isfinite(value) and np.all(np.isfinite(grad)), name


@pytest.mark.parametrize("build,message", [
    (lambda: ngl_keras.AnyLoss(L=0), "L must be a finite number > 0"),
    (lambda: ngl_keras.AnyLoss(L=-3.0), "L must be a finite number > 0"),
    (lambda: ngl_keras.AnyLoss(beta=0), "beta must be a finite number > 0"),
    (lambda: ngl_keras.AnyLoss(metric="f2"), "metric must be one of"),
    (lambda: ngl_keras.AnyLoss(average="weighted"), "average must be one of"),
    (lambda: ngl_keras.BiTemperedLogisticLoss(t1=1.5), "t1 must be a number in [0, 1]"),
    (lambda: ngl_keras.BiTemperedLogisticLoss(t1=-0.1), "t1 must be a number in [0, 1]"),
    (lambda: ngl_keras.BiTemperedLogisticLoss(t2=0.0), "t2 must be a finite number > 0"),
    (lambda: ngl_keras.BiTemperedLogisticLoss(num_iters=0), "num_iters must be an integer >= 1"),
    (lambda: ngl_keras.BiTemperedLogisticLoss(label_smoothing=1.0), "label_smoothing must be a number in [0, 1)"),
    (lambda: ngl_keras.SymmetricCrossEntropy(A=0.0), "A (the value of log 0) must be a finite number < 0"),
    (lambda: ngl_keras.ExpressionLoss("exp(p + "), "does not parse at position 8"),
    (lambda: ngl_keras.ExpressionLoss("p * 2"), "must use both p and y; it does not use y"),
    (lambda: ngl_keras.ExpressionLoss("exp(q) * y"), "unknown name 'q'"),
    (lambda: losses.get("cross_entropy"), "unknown loss 'cross_entropy'; known losses: anyloss"),
    (lambda: losses.get("ngl", gamma=2.0), "loss 'ngl' does not accept ['gamma']"),
    (lambda: losses.get("ngl", l2=1e-3), "only 'ce_l2' regularises the kernels"),
    (lambda: ngl_keras.NGL(alpha=float("nan")), "alpha must be a finite number; got nan"),
    (lambda: ngl_keras.NGL(alpha=float("inf")), "alpha must be a finite number; got inf"),
    (lambda: ngl_keras.NGL(alpha=True), "alpha must be a finite number; got True"),
    (lambda: ngl_keras.NGL(from_logits="no"), "from_logits must be true or false; got 'no'"),
    (lambda: ngl_keras.NGL(scaling=1), "scaling must be true or false; got 1"),
    (lambda: ngl_keras.AnyLoss(L=float("inf")), "L must be a finite number > 0; got inf"),
    (lambda: ngl_keras.AnyLoss(epsilon=True), "epsilon must be a finite number > 0; got True"),
    (lambda: ngl_keras.AnyLoss(from_logits="false"), "from_logits must be true or false; got 'false'"),
    (lambda: ngl_keras.ExpressionLoss("p*y", epsilon=True), "epsilon must be a finite number > 0; got True"),
    (lambda: ngl_keras.ExpressionLoss("p*y", epsilon=float("nan")), "epsilon must be a finite number > 0"),
    (lambda: ngl_keras.SymmetricCrossEntropy(alpha=float("nan")), "alpha must be a finite number >= 0"),
    (lambda: ngl_keras.SymmetricCrossEntropy(from_logits="no"), "from_logits must be true or false"),
    (lambda: ngl_keras.SoftDice(smooth=float("inf")), "smooth must be a finite number >= 0; got inf"),
    (lambda: ngl_keras.BiTemperedLogisticLoss(t2=float("inf")), "t2 must be a finite number > 0; got inf"),
    (lambda: losses.get("ce", from_logits="no"), "loss 'ce': from_logits must be true or false; got 'no'"),
    (lambda: losses.get("focal", gamma=float("nan")), "loss 'focal': gamma must be a finite number; got nan"),
    (lambda: losses.get("ce_l2", l2=-1.0), "loss 'ce_l2': l2 must be a finite number >= 0; got -1.0"),
    (lambda: ngl_keras.AnyLoss(reduction="none"),
     "reduction 'none' cannot apply to AnyLoss: a batch-level loss has one value per batch"),
    (lambda: ngl_keras.SoftDice(reduction="sum"), "reduction 'sum' cannot apply to SoftDice"),
])
def test_bad_parameters_are_rejected_where_they_enter(build, message):
    with pytest.raises(ValueError) as error:
        build()
    assert message in str(error.value)


@pytest.mark.parametrize("name", sorted(OURS))
def test_bad_labels_are_rejected_with_the_problem_named(name):
    build, kind = OURS[name]
    loss = build()
    p = predictions(kind, (4, 3))
    with pytest.raises(ValueError, match=r"Integer labels must lie in \[0, 3\) for 3 classes; got values from 0 to 3"):
        loss(np.array([0, 1, 2, 3]), p)
    with pytest.raises(ValueError, match=r"Integer labels must lie in \[0, 3\).*from -1 to 2"):
        loss(np.array([-1, 1, 2, 0]), p)
    with pytest.raises(ValueError, match=r"y_true shape \(4, 5\) cannot match y_pred shape \(4, 3\)"):
        loss(np.zeros((4, 5)), p)


def test_registry_lists_names_and_gives_kernel_l2():
    assert {"ce", "focal", "ce_l2", "ngl", "sce", "dice", "bi_tempered", "anyloss_f1"} <= set(losses.names())
    assert losses.kernel_l2("ce_l2") == 1e-4
    assert losses.kernel_l2("ce_l2", l2=5e-4) == 5e-4
    assert losses.kernel_l2("ngl") == 0.0
    assert isinstance(losses.get("ce_l2", l2=5e-4), keras.losses.CategoricalCrossentropy)
    assert losses.get("anyloss_gmean").get_config()["metric"] == "gmean"
    assert isinstance(losses.get("focal"), keras.losses.CategoricalFocalCrossentropy)
    assert losses.get("sce", alpha=6.0).get_config()["alpha"] == 6.0
    assert isinstance(losses.get(NGL_FORMULA), ngl_keras.ExpressionLoss)


@pytest.mark.parametrize("name", sorted(OURS))
def test_sample_weight_of_the_wrong_length_is_a_one_line_error(name):
    build, kind = OURS[name]
    p = predictions(kind, (4, 3))
    with pytest.raises(ValueError, match=r"sample_weight shape \(3,\) does not fit predictions of shape "
                                         r"\(4, 3\): give one weight per example, shape \(4,\)"):
        build()(np.arange(4) % 3, p, sample_weight=np.ones(3, "float32"))
    # The shapes that fit still work: (B,), (B, 1) and a scalar.
    for weight in (np.ones(4, "float32"), np.ones((4, 1), "float32"), 1.0):
        assert np.isfinite(float(build()(np.arange(4) % 3, p, sample_weight=weight)))


def test_batch_level_losses_keep_the_default_reduction_through_a_config_round_trip():
    for loss in (ngl_keras.AnyLoss(), ngl_keras.SoftDice()):
        config = loss.get_config()
        assert config["reduction"] == "sum_over_batch_size"
        assert type(loss).from_config(config).get_config() == config
        config["reduction"] = "sum"
        with pytest.raises(ValueError, match="reduction 'sum' cannot apply"):
            type(loss).from_config(config)


@pytest.mark.parametrize("name", ["ngl", "anyloss_f1", "expression_ngl"])
def test_out_of_range_labels_inside_a_compiled_fit_give_a_nan_loss_not_a_silent_zero_target(name):
    build, _ = OURS[name]
    x = RNG.normal(size=(8, 3)).astype("float32")

    def fit(labels):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, activation="softmax")])
        model.compile(optimizer="sgd", loss=build())
        return model.fit(x, labels, batch_size=8, epochs=1, verbose=0).history["loss"][0]

    assert np.isfinite(fit(np.array([0, 1, 2, 0, 1, 2, 0, 1])))
    assert np.isnan(fit(np.array([0, 1, 2, 5, 1, 2, 0, 1])))   # 5 is out of range for 3 classes
    assert np.isnan(fit(np.array([0, 1, 2, -1, 1, 2, 0, 1])))
