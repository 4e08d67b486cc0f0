"""The segmentation metrics against hand-computed confusion matrices and against the reference's
`scores()` (kazuto1011/deeplab-pytorch, libs/utils/metric.py, transcribed below)."""

import keras
import numpy as np
import pytest

from ngl_keras.segmentation_metrics import ConfusionMatrix, scores

pytestmark = pytest.mark.any_backend  # runs again under KERAS_BACKEND=jax

# Ground truth and prediction, 3 classes, a void column. Class 2 is predicted once but is absent
# from the ground truth.
LABELS = np.array([[[0, 0, 1, 255],
                    [1, 1, 0, 255]]])
PREDICTED = np.array([[[0, 2, 1, 2],
                       [1, 0, 0, 1]]])
# By hand, from the six non-void pixels (truth → prediction): 0→0, 0→2, 1→1, 0→0 | 1→1, 1→0.
HAND_MATRIX = np.array([[2, 0, 1],
                        [1, 2, 0],
                        [0, 0, 0]])


def reference_scores(label_trues, label_preds, n_class):
    """deeplab-pytorch's `_fast_hist` and `scores`, as published (with their nan warnings)."""
    hist = np.zeros((n_class, n_class))
    for lt, lp in zip(label_trues, label_preds):
        lt, lp = lt.flatten(), lp.flatten()
        mask = (lt >= 0) & (lt < n_class)
        hist += np.bincount(n_class * lt[mask].astype(int) + lp[mask],
                            minlength=n_class ** 2).reshape(n_class, n_class)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.diag(hist).sum() / hist.sum()
        acc_cls = np.nanmean(np.diag(hist) / hist.sum(axis=1))
        iu = np.diag(hist) / (hist.sum(axis=1) + hist.sum(axis=0) - np.diag(hist))
        valid = hist.sum(axis=1) > 0
        mean_iu = np.nanmean(iu[valid])
        freq = hist.sum(axis=1) / hist.sum()
        fwavacc = (freq[freq > 0] * iu[freq > 0]).sum()
    return {"pixel_accuracy": acc, "mean_accuracy": acc_cls, "miou": mean_iu, "frequency_weighted_iou": fwavacc}


def test_the_matrix_and_scores_by_hand_and_the_class_only_predicted():
    matrix = ConfusionMatrix(3).update(LABELS, PREDICTED)
    np.testing.assert_array_equal(matrix.matrix, HAND_MATRIX)
    got = matrix.scores()
    assert got["pixel_accuracy"] == pytest.approx(4 / 6)
    assert got["mean_accuracy"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    # IoU_0 = 2 / (3 + 3 - 2), IoU_1 = 2 / (3 + 2 - 2), IoU_2 = 0 / (0 + 1 - 0) but class 2 has no
    # ground-truth pixel, so the reference leaves it out of the mean:
    np.testing.assert_allclose(got["class_iou"], [1 / 2, 2 / 3, 0.0])
    assert got["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)              # 0.5833
    assert got["frequency_weighted_iou"] == pytest.approx(3 / 6 * 1 / 2 + 3 / 6 * 2 / 3)
    # Keras's MeanIoU counts the predicted-only class with IoU 0: (1/2 + 2/3 + 0) / 3 = 0.3889.
    keras_miou = keras.metrics.MeanIoU(num_classes=3, ignore_class=255, sparse_y_true=True, sparse_y_pred=True)
    keras_miou.update_state(LABELS, PREDICTED)
    assert float(keras_miou.result()) == pytest.approx((1 / 2 + 2 / 3 + 0) / 3, rel=1e-6)
    for key, value in reference_scores(LABELS, PREDICTED, 3).items():
        assert got[key] == pytest.approx(value), key


def test_a_class_neither_present_nor_predicted_is_nan_and_left_out():
    got = scores(np.array([[3, 1, 0], [0, 4, 0], [0, 0, 0]]))
    assert np.isnan(got["class_iou"][2])
    assert got["miou"] == pytest.approx((3 / 4 + 4 / 5) / 2)
    assert got["mean_accuracy"] == pytest.approx((3 / 4 + 1) / 2)


def test_scores_logits_and_label_shapes_and_batches_accumulate():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (4, 6, 7))
    labels[:, 0, :] = 255
    logits = rng.normal(size=(4, 6, 7, 5)).astype("float32")
    whole = ConfusionMatrix(5).update(labels, logits)
    in_parts = ConfusionMatrix(5)
    in_parts.update(labels[:2, ..., None], keras.ops.softmax(keras.ops.convert_to_tensor(logits[:2])))
    in_parts.update(labels[2:], np.argmax(logits[2:], -1)[..., None])
    np.testing.assert_array_equal(whole.matrix, in_parts.matrix)
    assert whole.matrix.sum() == 4 * 5 * 7   # one void row per image dropped
    expected = reference_scores(labels, np.argmax(logits, -1), 5)
    got = whole.scores()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key


@pytest.mark.parametrize("labels, predictions, message", [
    (np.array([[[0, 3]]]), np.array([[[0, 1]]]), "label value 3 is outside [0, 3)"),
    (np.array([[[0, -1]]]), np.array([[[0, 1]]]), "label value -1 is outside"),
    (np.array([[0, 1]]), np.array([[0, 1]]), "labels must have shape"),
    (np.array([[[0, 1]]]), np.zeros((1, 2, 2, 3)), "do not match labels of shape (1, 1, 2)"),
])
def test_bad_input_is_one_line(labels, predictions, message):
    with pytest.raises(ValueError) as error:
        ConfusionMatrix(3).update(labels, predictions)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_an_empty_matrix_is_refused():
    matrix = ConfusionMatrix(3).update(np.full((1, 2, 2), 255), np.zeros((1, 2, 2), int))
    with pytest.raises(ValueError, match="empty"):
        matrix.scores()
