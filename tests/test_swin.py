"""The Swin Transformer: the reference's parameter counts, windows, shifted-window mask, stochastic
depth, a reduced model's forward pass and the image sizes it refuses."""

import keras
import numpy as np
import pytest

from ngl_keras import swin

# A reduced Swin for fast tests: a 14x14 token grid (two windows a side, so the shifted block
# masks), then 7x7 (one window: attended whole, never shifted).
SMALL = dict(image_size=56, num_classes=5, embed_dim=24, depths=(2, 2), num_heads=(1, 2))


def reference_parameter_count(embed, depths, heads, window=7, classes=1000, patch=4):
    """microsoft/Swin-Transformer models/swin_transformer.py, its nn.Parameters counted by hand."""
    count = 3 * patch * patch * embed + embed + 2 * embed                      # PatchEmbed conv + norm
    for stage, (depth, num_heads) in enumerate(zip(depths, heads)):
        c = embed * 2 ** stage
        attention = (2 * window - 1) ** 2 * num_heads + (c * 3 * c + 3 * c) + (c * c + c)
        mlp = (c * 4 * c + 4 * c) + (4 * c * c + c)
        count += depth * (2 * c + attention + 2 * c + mlp)                      # norm1, attn, norm2, mlp
        if stage < len(depths) - 1:
            count += 2 * 4 * c + 4 * c * 2 * c                                 # PatchMerging norm + reduction
    c = embed * 2 ** (len(depths) - 1)
    return count + 2 * c + c * classes + classes                               # norm + head


def test_the_hand_count_of_the_reference_gives_the_published_figures():
    assert reference_parameter_count(96, (2, 2, 6, 2), (3, 6, 12, 24)) == 28_288_354
    assert reference_parameter_count(96, (2, 2, 18, 2), (3, 6, 12, 24)) == 49_606_258


@pytest.mark.any_backend
@pytest.mark.parametrize("build, expected", [(swin.swin_t, 28_288_354), (swin.swin_s, 49_606_258)])
def test_parameter_counts_equal_the_reference(build, expected):
    assert build(num_classes=1000).count_params() == expected


@pytest.mark.any_backend
def test_window_partition_cuts_row_major_windows_and_reverse_undoes_it():
    x = np.random.default_rng(0).normal(size=(2, 14, 21, 3)).astype("float32")
    windows = np.asarray(swin.window_partition(x, 7))
    expected = np.stack([x[b, i:i + 7, j:j + 7] for b in range(2) for i in (0, 7) for j in (0, 7, 14)])
    np.testing.assert_array_equal(windows, expected)
    np.testing.assert_array_equal(np.asarray(swin.window_reverse(windows, 7, 14, 21)), x)


def test_relative_position_index_points_at_the_offset_of_each_pair():
    index = swin.relative_position_index(3)
    coords = [(i, j) for i in range(3) for j in range(3)]
    for a, (ai, aj) in enumerate(coords):
        for b, (bi, bj) in enumerate(coords):
            assert index[a, b] == (ai - bi + 2) * 5 + (aj - bj + 2)


@pytest.mark.parametrize("resolution, window, shift", [(14, 7, 3), (8, 4, 2)])
def test_shifted_window_mask_separates_tokens_that_the_cyclic_shift_brought_together(resolution, window, shift):
    """Independent construction: a token at (i, j) of the shifted grid came from
    ((i + shift) mod H, (j + shift) mod W); two tokens of a window may attend to each other iff
    neither coordinate wrapped differently (the same region of the reference's 3x3 split)."""
    def region(i):
        return 0 if i < resolution - window else 1 if i < resolution - shift else 2

    per_side = resolution // window
    expected = np.zeros((per_side ** 2, window ** 2, window ** 2), dtype="float32")
    for wi in range(per_side):
        for wj in range(per_side):
            tokens = [(wi * window + a, wj * window + b) for a in range(window) for b in range(window)]
            for p, (pi, pj) in enumerate(tokens):
                for q, (qi, qj) in enumerate(tokens):
                    same = region(pi) == region(qi) and region(pj) == region(qj)
                    expected[wi * per_side + wj, p, q] = 0.0 if same else -100.0
    np.testing.assert_array_equal(swin.shifted_window_mask(resolution, window, shift), expected)
    assert np.all(expected[0] == 0.0) and np.any(expected[-1] != 0.0)


@pytest.mark.any_backend
def test_stochastic_depth_is_the_identity_at_inference():
    x = np.random.default_rng(1).normal(size=(64, 5, 3)).astype("float32")
    layer = swin.StochasticDepth(0.3, seed=0)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    np.testing.assert_array_equal(np.asarray(layer(x)), x)


@pytest.mark.any_backend
def test_stochastic_depth_drops_whole_samples_and_keeps_the_expected_value_in_training():
    rate, samples = 0.3, 20_000
    x = np.ones((samples, 4, 2), dtype="float32")
    out = np.asarray(swin.StochasticDepth(rate, seed=0)(x, training=True))
    per_sample = out.reshape(samples, -1)
    assert np.all(per_sample == per_sample[:, :1])                      # a sample is dropped whole
    kept = per_sample[:, 0] != 0
    np.testing.assert_allclose(per_sample[kept], 1 / (1 - rate), rtol=1e-6)   # the kept ones scaled up
    assert abs(per_sample.mean() - 1.0) < 0.02                          # 3.5 standard errors at this size
    assert abs((~kept).mean() - rate) < 0.015


@pytest.mark.any_backend
def test_a_reduced_swin_maps_images_to_logits_and_its_blocks_shift_where_the_grid_allows():
    model = swin.swin_transformer(**SMALL, drop_path_rate=0.1)
    images = np.random.default_rng(2).uniform(0, 1, (3, 56, 56, 3)).astype("float32")
    assert tuple(model(images, training=False).shape) == (3, 5)
    assert tuple(model(images, training=True).shape) == (3, 5)
    blocks = [layer for layer in model.layers if isinstance(layer, swin.SwinBlock)]
    assert [(b.resolution, b.window_size, b.shift_size) for b in blocks] == [(14, 7, 0), (14, 7, 3), (7, 7, 0),
                                                                           (7, 7, 0)]
    np.testing.assert_allclose([b.drop_path for b in blocks], [0.0, 0.1 / 3, 0.2 / 3, 0.1], rtol=1e-6)
    assert model.count_params() == reference_parameter_count(24, (2, 2), (1, 2), classes=5)


@pytest.mark.any_backend
def test_a_reduced_swin_rebuilds_from_its_config_with_the_same_outputs():
    model = swin.swin_transformer(**SMALL)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    images = np.random.default_rng(3).uniform(0, 1, (2, 56, 56, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(clone(images)), np.asarray(model(images)), atol=1e-5)


@pytest.mark.any_backend
@pytest.mark.parametrize("image_size", [100, 112, 230])
def test_an_image_size_that_does_not_split_into_windows_is_refused_in_one_line(image_size):
    with pytest.raises(ValueError, match=f"image_size {image_size} does not fit window 7") as error:
        swin.swin_t(image_size=image_size)
    assert "\n" not in str(error.value)


@pytest.mark.any_backend
@pytest.mark.parametrize("image_size", [224, 448])
def test_image_sizes_whose_every_stage_splits_into_windows_are_accepted(image_size):
    swin.check_image_size(image_size, 7, 4)
