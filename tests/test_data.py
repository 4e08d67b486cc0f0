"""Dataset registry, loaders (tfds under mock_data, Fashion-MNIST IDX files) and the pipeline."""

from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from ngl_keras import config, data, models
from tests import reference
from tests.paths import CONFIGS

MOCK_EXAMPLES = 20


def _images_and_labels(source):
    if isinstance(source, tuple):
        return list(source[0]), np.asarray(source[1])
    images, labels = [], []
    for image, label in tfds.as_numpy(source):
        images.append(image)
        labels.append(label)
    return images, np.asarray(labels)


@pytest.mark.parametrize("name", sorted(data.DATASETS))
def test_every_dataset_loads_through_the_real_code_under_mock_data(name):
    dataset = data.info(name)
    settings = config.dataset_settings(name, CONFIGS)
    splits = settings.splits.roles()
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        loaded = {part: _images_and_labels(data.load_split(name, spec)) for part, spec in splits.items()}
        if name == "fashion_mnist":  # the real IDX files win over tfds when installed
            loaded = {part: _images_and_labels(data.readers._load_tfds(dataset, spec, None, None))
                      for part, spec in splits.items()}
    for part, (images, labels) in loaded.items():
        assert len(images) > 0, part
        assert labels.min() >= 0 and labels.max() < dataset.classes
        for image in images[:3]:
            assert image.dtype == np.uint8 and image.shape[-1] == dataset.channels
            if dataset.fixed_size:
                assert image.shape[:2] == (dataset.fixed_size, dataset.fixed_size)


@pytest.mark.parametrize("name", sorted(data.DATASETS))
def test_configured_splits_never_overlap(name):
    """The configured split slices, made absolute by tfds's own split arithmetic on the real
    split sizes, are disjoint."""
    dataset = data.info(name)
    splits = config.dataset_settings(name, CONFIGS).splits.roles()
    ranges = {}
    for part, spec in splits.items():
        (instruction,) = tfds.core.ReadInstruction.from_spec(spec).to_absolute(
            {split: SimpleNamespace(num_examples=n) for split, n in dataset.sizes.items()})
        start = instruction.from_ or 0
        stop = dataset.sizes[instruction.splitname] if instruction.to is None else instruction.to
        ranges[part] = (instruction.splitname, start, stop)
        assert stop > start
    parts = list(ranges)
    for i, a in enumerate(parts):
        for b in parts[i + 1:]:
            (split_a, start_a, stop_a), (split_b, start_b, stop_b) = ranges[a], ranges[b]
            assert split_a != split_b or stop_a <= start_b or stop_b <= start_a, (a, b)
    # Our own slicing of the IDX arrays agrees with tfds's.
    if name == "fashion_mnist":
        assert data.Split.parse(splits["train"]).rows(60000) == ranges["train"][1:]
        assert data.Split.parse(splits["validation"]).rows(60000) == ranges["validation"][1:]


SPECS = ["train", "train[:90%]", "train[90%:]", "train[-10%:]", "train[:-25%]", "train[33.3%:66.7%]",
         "train[10:]", "train[:100]", "train[-7:]", "train[3:-3]", "train[1_0:20]", "train[10:50%]",
         "train[:100.5]", "train[:101%]", "train[:200]", "train[-201:]", "train[]", "train[:]", "train[5]",
         "train+test", "train[a:b]", "train[:%]", "train[1.5:]", "train[:-100%]", "train[-100%:]"]


@pytest.mark.parametrize("spec", SPECS)
def test_the_split_grammar_is_tfds_own(spec):
    """`data.Split` reads a spec as tfds.core.ReadInstruction does (the same rows over 200 examples),
    and refuses what tfds refuses."""
    count = 200
    try:
        (instruction,) = tfds.core.ReadInstruction.from_spec(spec).to_absolute(
            {"train": SimpleNamespace(num_examples=count), "test": SimpleNamespace(num_examples=count)})
        expected = (instruction.from_ or 0, count if instruction.to is None else instruction.to)
    except (ValueError, NotImplementedError, TypeError):
        expected = None
    try:
        ours = data.Split.parse(spec).rows(count)
    except ValueError:
        ours = None
    assert ours == expected


def test_a_split_with_a_fraction_of_an_example_is_refused_when_the_config_is_read(tmp_path):
    with pytest.raises(ValueError) as error:
        config.dataset_settings("fashion_mnist", CONFIGS, {"splits": {"train": "train[:100.5]"}})
    assert str(error.value) == ("settings for fashion_mnist: splits: 'train' must be a split such as 'train', "
                                "'train[:90%]', 'train[-10%:]' or 'test[1000:]'; got 'train[:100.5]'.")


def test_split_slices_are_deterministic_and_disjoint():
    assert data.Split.parse("train[:90%]").rows(60000) == (0, 54000)
    assert data.Split.parse("train[90%:]").rows(60000) == (54000, 60000)
    assert data.Split.parse("train[70%:80%]").rows(27558) == (19291, 22046)


@pytest.mark.realdata
def test_real_fashion_mnist_from_the_debian_package():
    arrays = data.fashion_mnist_idx()
    assert arrays is not None, "apt-get install dataset-fashion-mnist"
    (train_x, train_y), (test_x, test_y) = arrays["train"], arrays["test"]
    assert train_x.shape == (60000, 28, 28, 1) and test_x.shape == (10000, 28, 28, 1)
    assert np.bincount(train_y).tolist() == [6000] * 10
    assert np.bincount(test_y).tolist() == [1000] * 10
    train, validation = data.load_split("fashion_mnist", "train[:90%]"), data.load_split(
        "fashion_mnist", "train[90%:]")
    assert len(train[1]) == 54000 and len(validation[1]) == 6000
    np.testing.assert_array_equal(validation[0][0], train_x[54000])
    assert len(data.load_split("fashion_mnist", "train[:90%]", limit=100)[1]) == 100


def test_pipeline_resizes_adds_channels_preprocesses_and_one_hots():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, 10)
    ds = data.input_pipeline((images, labels), classes=10, image_size=40, channels=3,
                             preprocess=models.info("inceptionv3").preprocess, batch_size=4)
    x, y = next(iter(ds))
    assert x.shape == (4, 40, 40, 3) and y.shape == (4, 10)
    np.testing.assert_array_equal(np.argmax(y, -1), labels[:4])
    expected = tf.image.resize(images[:4].astype("float32"), (40, 40)).numpy() / 127.5 - 1.0
    np.testing.assert_allclose(x[..., 0], expected[..., 0], atol=1e-4)
    np.testing.assert_allclose(x[..., 2], expected[..., 0], atol=1e-4)


def test_augmentation_only_on_training_and_reproducible_per_seed():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(8)  # one label per image: a batch's labels give its order after shuffling
    common = dict(classes=8, image_size=32, channels=3, preprocess=models.scale_to_unit, batch_size=8)
    plain = next(iter(data.input_pipeline((images, labels), **common)))[0].numpy()
    np.testing.assert_allclose(plain, images / 255.0, atol=1e-6)

    def shuffled(augmentation):
        x, y = next(iter(data.input_pipeline((images, labels), augmentation=augmentation,
                                             shuffle_seed=3, **common)))
        order = np.argmax(y.numpy(), -1)
        assert sorted(order) == list(range(8)) and list(order) != list(range(8))  # shuffled
        return x.numpy(), plain[order]

    # An augmentation that does nothing gives the shuffled plain images exactly ...
    x, reference = shuffled(data.Augmentation(horizontal_flip=False, width_shift=0.0,
                                              height_shift=0.0, zoom=0.0))
    np.testing.assert_allclose(x, reference, atol=1e-5)
    # ... and the configured one changes every image, the same way for the same seed.
    first, reference = shuffled(data.Augmentation())
    assert all(not np.allclose(first[k], reference[k], atol=1e-3) for k in range(8))
    np.testing.assert_allclose(first, shuffled(data.Augmentation())[0])


def test_variable_size_images_are_resized_one_by_one_before_batching():
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((20, 30, 3), (41, 25, 3), (16, 16, 3))]
    source = tf.data.Dataset.from_generator(
        lambda: iter(zip(images, [0, 2, 1])),
        output_signature=(tf.TensorSpec((None, None, 3), tf.uint8), tf.TensorSpec((), tf.int64)))
    x, y = next(iter(data.input_pipeline(source, classes=3, image_size=16, channels=3,
                                         preprocess=models.scale_to_unit, batch_size=3)))
    assert x.shape == (3, 16, 16, 3)
    np.testing.assert_array_equal(np.argmax(y, -1), [0, 2, 1])
    for k, image in enumerate(images):
        expected = tf.cast(tf.image.resize(image, (16, 16)), tf.uint8).numpy() / 255.0
        np.testing.assert_allclose(x[k].numpy(), expected, atol=1e-6)


def test_unknown_dataset_and_missing_split_and_offline_dataset_are_named():
    with pytest.raises(ValueError, match=r"^unknown dataset 'no_such_set': not one of the paper's \(caltech101, "
                                         r"cifar10, .*\) and tfds does not know it \(DatasetNotFoundError: Dataset "
                                         r"no_such_set not found.\); accepted: those, or the name of a tfds "
                                         r"image-classification dataset prepared in --data-dir.$"):
        data.info("no_such_set")
    with pytest.raises(ValueError, match=r"^dataset 'mnist' \(tfds\) is not prepared in /nonexistent: nothing is "
                                         r"downloaded; prepare it on a machine with internet"):
        data.info("mnist", "/nonexistent")
    with pytest.raises(ValueError, match="dataset 'malaria' has no split 'test'; it has train"):
        data.load_split("malaria", "test")
    with pytest.raises(ValueError, match=r"dataset 'cifar10' \(tfds 'cifar10'\) is not available offline in /nonexistent"):
        data.load_split("cifar10", "train", data_dir="/nonexistent")


def test_an_unprepared_dataset_gives_the_tfds_build_command_and_not_tfdss_message():
    with pytest.raises(ValueError) as raised:
        data.load_split("cifar10", "train", data_dir="/nonexistent")
    assert str(raised.value) == (
        "dataset 'cifar10' (tfds 'cifar10') is not available offline in /nonexistent: nothing is downloaded; "
        "prepare it on a machine with internet with `tfds build cifar10 --data_dir /nonexistent` and copy it "
        "there, or pass --data-dir")


def test_fused_transform_matches_flip_shift_and_zoom_done_separately():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 255, (3, 16, 20, 3)).astype("float32")
    true, false = np.array([True] * 3), np.array([False] * 3)
    ones, zeros = np.ones(3, "float32"), np.zeros(3, "float32")
    np.testing.assert_allclose(data.affine_transform(x, false, zeros, zeros, ones, ones), x, atol=1e-4)
    np.testing.assert_allclose(data.affine_transform(x, true, zeros, zeros, ones, ones), x[:, :, ::-1], atol=1e-4)
    # A shift of 0.1 x 20 = 2 pixels: output column c reads input column c + 2, edges repeated.
    shifted = data.affine_transform(x, false, np.full(3, 0.1, "float32"), zeros, ones, ones).numpy()
    np.testing.assert_allclose(shifted[:, :, :18], x[:, :, 2:], atol=1e-4)
    np.testing.assert_allclose(shifted[:, :, 18:], np.repeat(x[:, :, 19:20], 2, axis=2), atol=1e-4)
    # Zoom: Keras's RandomZoom with the same factor gives the same image (coordinate scale 0.8).
    import keras

    layer = keras.layers.RandomZoom((-0.2, -0.2), (-0.2, -0.2), fill_mode="nearest", interpolation="bilinear")
    zoomed = data.affine_transform(x, false, zeros, zeros, np.full(3, 0.8, "float32"), np.full(3, 0.8, "float32"))
    np.testing.assert_allclose(zoomed.numpy(), np.asarray(layer(x, training=True)), atol=1e-3)
    with pytest.raises(ValueError, match="augmentation zoom must lie in"):
        data.Augmentation(zoom=1.5)


@pytest.mark.parametrize("shape", [(6, 16, 20, 3), (6, 28, 28, 1)])
def test_separable_resampling_equals_the_projective_kernel_with_the_same_matrix(shape):
    import tensorflow as tf

    x, (flip, shift_x, shift_y, zoom_x, zoom_y) = reference.affine_case(shape, seed=5)
    height, width = shape[1:3]
    cx, cy = (width - 1) / 2, (height - 1) / 2
    sign = np.where(flip, -1.0, 1.0)
    origin = np.where(flip, width - 1.0, 0.0)
    # Output (x, y) reads input (zx·sign·x + zx·(origin − cx) + cx + sx·width, zy·y + cy − zy·cy + sy·height).
    zero = np.zeros(6)
    matrix = np.stack([zoom_x * sign, zero, zoom_x * (origin - cx) + cx + shift_x * width,
                       zero, zoom_y, cy - zoom_y * cy + shift_y * height, zero, zero], axis=1)
    expected = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=matrix.astype("float32"), output_shape=[height, width], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="NEAREST").numpy()
    got = data.affine_transform(x, flip, shift_x, shift_y, zoom_x, zoom_y).numpy()
    assert got.shape == shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-3)
    # uint8 input gives the same float image.
    np.testing.assert_allclose(data.affine_transform(x.round().astype("uint8"), flip, shift_x, shift_y,
                                                     zoom_x, zoom_y).numpy(),
                               data.affine_transform(x.round(), flip, shift_x, shift_y, zoom_x, zoom_y).numpy(),
                               atol=1e-4)


def test_augmented_pipelines_of_several_image_sizes_in_one_process():
    """The one compiled kernel is traced per image size: it needs static height and width, so
    tf.function's shape relaxation after a few sizes would break it."""
    for size in (16, 20, 24, 28):
        images = np.random.default_rng(size).integers(0, 256, (8, size, size, 1), dtype=np.uint8)
        x, _ = next(iter(data.input_pipeline((images, np.arange(8) % 2), classes=2, image_size=size, channels=1,
                                             preprocess=models.scale_to_unit, batch_size=4,
                                             augmentation=data.Augmentation(), shuffle_seed=0)))
        assert x.shape == (4, size, size, 1) and not np.allclose(x, images[:4] / 255.0, atol=1e-3)
