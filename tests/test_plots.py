import numpy as np
import pytest

import ngl_keras
from ngl_keras import plots


def test_loss_curves_writes_a_png_with_ngls_minimum(tmp_path):
    path = tmp_path / "curves.png"
    curves = plots.loss_curves(path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert set(curves) == {"ce", "ngl"}
    assert curves["ngl"][2] == pytest.approx(0.566, abs=0.003)
    assert curves["ce"][2] == pytest.approx(1.0)
    p, values, _ = curves["ce"]
    np.testing.assert_allclose(values[250], -np.log(p[250]), rtol=1e-5)


def test_loss_curves_take_formulas_objects_and_batch_losses(tmp_path):
    curves = plots.loss_curves(["(p - y)^2", ngl_keras.NGL(alpha=1.0), "anyloss_f1"],
                               path=tmp_path / "c.png", points=101)
    assert curves["(p - y)^2"][2] == pytest.approx(1.0)
    p, values, _ = curves["(p - y)^2"]
    np.testing.assert_allclose(values, (1 - p) ** 2, atol=1e-6)  # mean of the two classes' terms
    assert len(curves["anyloss_f1"][1]) == 101
