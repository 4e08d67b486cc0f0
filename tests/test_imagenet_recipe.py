"""The ImageNet training recipe: the learning rate by the formula, AdamW's exclusions, the
mixup-or-cutmix targets, the crops' boxes and shapes, the per-image augmentation."""

import math

import keras
import numpy as np
import pytest

from ngl_keras import imagenet_recipe as recipe
from ngl_keras import swin


@pytest.mark.any_backend
def test_learning_rates_scale_linearly_with_the_global_batch():
    assert recipe.linear_scaled(recipe.BASE_LR_PER_512, 1024) == pytest.approx(1e-3)
    assert recipe.linear_scaled(recipe.BASE_LR_PER_512, 256) == pytest.approx(2.5e-4)
    assert recipe.linear_scaled(recipe.MIN_LR_PER_512, 1024) == pytest.approx(1e-5)


@pytest.mark.any_backend
def test_the_schedule_warms_up_linearly_then_follows_the_cosine_to_the_minimum():
    batch, steps_per_epoch, epochs, warmup_epochs = 1024, 10, 30, 2
    schedule = recipe.learning_rate_schedule(batch, steps_per_epoch, epochs=epochs, warmup_epochs=warmup_epochs)
    base, warmup, minimum = 1e-3, 1e-6, 1e-5
    w, t_end = warmup_epochs * steps_per_epoch, epochs * steps_per_epoch

    def formula(t):
        if t < w:
            return warmup + (base - warmup) * t / w
        return minimum + (base - minimum) * (1 + math.cos(math.pi * (t - w) / (t_end - w))) / 2

    for step in (0, 5, 19, 20, 21, 100, 160, 299, 300):
        assert float(schedule(step)) == pytest.approx(formula(step), rel=1e-5, abs=1e-12), step
    assert float(schedule(t_end)) == pytest.approx(minimum, rel=1e-5)


def _dense_norm_model():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, bias_initializer="ones")(inputs)
    outputs = keras.layers.LayerNormalization(beta_initializer="ones")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.any_backend
def test_weight_decay_moves_a_kernel_but_not_a_bias_or_a_norm_under_a_zero_gradient():
    model = _dense_norm_model()
    optimizer = recipe.adamw(model, learning_rate=0.1)
    before = {v.path: keras.ops.convert_to_numpy(v.value) for v in model.trainable_variables}
    optimizer.apply([keras.ops.zeros(v.shape) for v in model.trainable_variables], model.trainable_variables)
    after = {v.path: keras.ops.convert_to_numpy(v.value) for v in model.trainable_variables}
    for path in before:
        if path.endswith("kernel"):
            np.testing.assert_allclose(after[path], before[path] * (1 - 0.1 * recipe.WEIGHT_DECAY), rtol=1e-6)
        else:                                                            # bias, gamma, beta
            np.testing.assert_array_equal(after[path], before[path])
    assert sorted(p.rsplit("/", 1)[1] for p in before) == ["beta", "bias", "gamma", "kernel"]


@pytest.mark.any_backend
def test_adamw_has_the_recipe_settings_and_excludes_swin_position_tables():
    model = swin.swin_transformer(image_size=56, num_classes=3, embed_dim=12, depths=(2, 2), num_heads=(1, 2))
    optimizer = recipe.adamw(model, learning_rate=1e-3)
    assert (optimizer.weight_decay, optimizer.global_clipnorm, optimizer.epsilon) == (0.05, 5.0, 1e-8)
    assert (optimizer.beta_1, optimizer.beta_2) == (0.9, 0.999)
    excluded = {v.path for v in recipe.no_weight_decay_variables(model)}
    decayed = {v.path for v in model.trainable_variables} - excluded
    assert sum("relative_position_bias_table" in p for p in excluded) == 4
    assert all(p.endswith("kernel") for p in decayed)


@pytest.mark.any_backend
def test_smoothed_targets_put_one_minus_epsilon_plus_epsilon_over_k_on_the_class():
    targets = np.asarray(recipe.smoothed_one_hot(np.array([2, 0]), 5, 0.1))
    np.testing.assert_allclose(targets[0], [0.02, 0.02, 0.92, 0.02, 0.02], rtol=1e-6)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)


def _batch(size=16, side=12, classes=10):
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (size, side, side, 3)).astype("float32"), np.arange(size) % classes


@pytest.mark.any_backend
@pytest.mark.parametrize("switch_probability", [0.0, 0.5, 1.0])
def test_mixed_targets_sum_to_one_and_keep_the_smoothing_floor(switch_probability):
    images, labels = _batch()
    mix = recipe.MixUpOrCutMix(10, switch_probability=switch_probability, seed=1)
    for _ in range(4):
        mixed, targets = (np.asarray(t) for t in mix(images, labels))
        assert mixed.shape == images.shape and targets.shape == (16, 10)
        np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-5)
        assert targets.min() >= 0.1 / 10 - 1e-6 and targets.max() <= 1 - 0.1 + 0.1 / 10 + 1e-6


@pytest.mark.any_backend
def test_cutmix_pastes_pixels_and_mixup_blends_them():
    images, labels = _batch()
    cut, _ = recipe.MixUpOrCutMix(10, switch_probability=1.0, seed=2)(images, labels)
    blend, _ = recipe.MixUpOrCutMix(10, switch_probability=0.0, seed=2)(images, labels)
    cut, blend = np.asarray(cut), np.asarray(blend)
    # Every cutmix pixel is the same pixel of some image of the batch; mixup's are mostly new values.
    pasted = np.any(np.all(np.isclose(cut[:, None], images[None]), axis=-1), axis=1)
    assert pasted.all()
    blended = ~np.any(np.all(np.isclose(blend[:, None], images[None]), axis=-1), axis=1)
    assert blended.mean() > 0.5


@pytest.mark.any_backend
def test_the_switch_picks_cutmix_about_as_often_as_asked():
    images, labels = _batch(size=8, side=6)
    mix = recipe.MixUpOrCutMix(10, switch_probability=0.5, seed=3)
    cutmix_batches = 0
    for _ in range(40):
        mixed, _ = mix(images, labels)
        pasted = np.any(np.all(np.isclose(np.asarray(mixed)[:, None], images[None]), axis=-1), axis=1)
        cutmix_batches += bool(pasted.all())
    assert 10 <= cutmix_batches <= 30                       # Binomial(40, 0.5): 3.2 standard deviations


@pytest.mark.any_backend
def test_random_resized_crop_boxes_lie_inside_the_image_with_the_allowed_area_and_ratio():
    rng = np.random.default_rng(4)
    height, width = 300, 200
    for _ in range(50):
        uniforms = rng.uniform(size=(recipe.CROP_ATTEMPTS, 4)).astype("float32")
        top, left, h, w = (float(v) for v in recipe.random_resized_crop_box(height, width, uniforms))
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        assert 0.08 * 0.97 <= h * w / (height * width) <= 1.0        # rounding to whole pixels
        assert 3 / 4 * 0.97 <= w / h <= 4 / 3 * 1.03


@pytest.mark.any_backend
def test_an_image_no_attempt_fits_falls_back_to_the_centre_crop_at_the_nearest_ratio():
    uniforms = np.full((recipe.CROP_ATTEMPTS, 4), 0.999, dtype="float32")    # full area at ratio 4/3
    top, left, h, w = (float(v) for v in recipe.random_resized_crop_box(400, 100, uniforms))
    assert (top, left, h, w) == (133.0, 0.0, 133.0, 100.0)     # 100 / 133 ≈ 3/4; top (400 - 133) // 2


@pytest.mark.any_backend
def test_crop_and_resize_of_the_whole_image_at_its_size_is_the_identity_and_halves_exactly():
    image = np.random.default_rng(5).uniform(0, 255, (8, 8, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(recipe.crop_and_resize(image, 0, 0, 8, 8, 8)), image, atol=1e-4)
    quarter = np.asarray(recipe.crop_and_resize(image, 2, 4, 4, 4, 4))
    np.testing.assert_allclose(quarter, image[2:6, 4:8], atol=1e-4)
    halved = np.asarray(recipe.crop_and_resize(image, 0, 0, 8, 8, 4))     # bilinear at pixel-centre midpoints
    expected = image.reshape(4, 2, 4, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(halved, expected, atol=1e-4)


@pytest.mark.any_backend
@pytest.mark.parametrize("shape", [(300, 200, 3), (180, 500, 3), (224, 224, 3)])
def test_random_resized_crop_and_the_evaluation_crop_give_224_squares(shape):
    image = np.random.default_rng(6).uniform(0, 255, shape).astype("float32")
    crop = recipe.RandomResizedCrop(seed=0)
    assert tuple(np.asarray(crop(image)).shape) == (224, 224, 3)
    assert tuple(np.asarray(crop(image, training=False)).shape) == (224, 224, 3)
    assert tuple(np.asarray(recipe.center_crop_for_evaluation(image)).shape) == (224, 224, 3)


@pytest.mark.any_backend
def test_the_evaluation_crop_is_the_centre_of_the_shorter_side_resized_to_256():
    # A horizontal ramp, 512 x 768: resized to 256 x 384, its centre 224 columns are columns 80..304,
    # i.e. source columns 160..608, sampled at pixel centres.
    ramp = np.broadcast_to(np.arange(768, dtype="float32")[None, :, None], (512, 768, 1))
    out = np.asarray(recipe.center_crop_for_evaluation(ramp))
    assert out.shape == (224, 224, 1)
    step = 448 / 224
    np.testing.assert_allclose(out[0, :, 0], 160 + (np.arange(224) + 0.5) * step - 0.5, atol=1e-3)
    np.testing.assert_allclose(out[:, 0, 0], out[0, 0, 0])


@pytest.mark.any_backend
def test_the_training_augmentation_maps_a_decoded_image_of_any_size_to_a_224_square():
    image = np.random.default_rng(7).integers(0, 256, (250, 330, 3)).astype("uint8")
    augment = recipe.train_augmentation(seed=0)
    out = np.asarray(augment(image, training=True))
    assert out.shape == (224, 224, 3) and 0 <= out.min() and out.max() <= 255
    names = [layer.__class__.__name__ for layer in augment.layers]
    assert names == ["RandomResizedCrop", "RandomFlip", "RandAugment", "RandomErasing"]
    assert augment.layers[3].factor == (0.25, 0.25) and augment.layers[2].num_ops == 2
