"""The segmentation readers on tiny VOC- and COCO-Stuff-layout trees written here, the reference's
augmentation, the PyDataset batches, and bad input."""

import shutil

import numpy as np
import pytest
from PIL import Image

from ngl_keras import segmentation_data as sd

pytestmark = pytest.mark.any_backend  # runs again under KERAS_BACKEND=jax (tf_dataset's test is TF only)

JPEG_TOLERANCE = 12   # flat colour blocks survive JPEG at quality 100 to within this


def scene(index, height=20, width=24, classes=21):
    """An image of flat colour blocks and its label: class (index % (classes-1)) + 1 on the right
    half, background on the left, a one-pixel void border."""
    label = np.zeros((height, width), np.uint8)
    label[:, width // 2:] = index % (classes - 1) + 1
    label[0, :] = label[-1, :] = label[:, 0] = label[:, -1] = sd.VOID
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (40, 80, 120)
    image[:, width // 2:] = (200, 30 + 10 * index, 60)
    return image, label


def save_pair(image, label, image_path, label_path, palette=True):
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(image_path, quality=100, subsampling=0)
    if palette:
        png = Image.fromarray(label, mode="P")
        png.putpalette(sd.voc_palette())
    else:
        png = Image.fromarray(label, mode="L")
    png.save(label_path)


def write_voc(root, ids=("a", "b", "c"), val=("c",), aug=()):
    base = root / "VOC2012"
    for i, name in enumerate(ids):
        save_pair(*scene(i), base / "JPEGImages" / f"{name}.jpg", base / "SegmentationClass" / f"{name}.png")
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("".join(f"{n}\n" for n in ids if n not in val))
    (lists / "val.txt").write_text("".join(f"{n}\n" for n in val))
    if aug:
        for i, name in enumerate(aug):
            save_pair(*scene(i + 5), base / "JPEGImages" / f"{name}.jpg",
                      base / "SegmentationClassAug" / f"{name}.png", palette=False)
        (base / "ImageSets" / "SegmentationAug").mkdir(parents=True)
        (base / "ImageSets" / "SegmentationAug" / "train_aug.txt").write_text(
            "".join(f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png\n" for n in aug))
    return root


def write_coco_stuff(root, split="val2017", count=2):
    for i in range(count):
        image, label = scene(i, classes=182)
        label[label == 1] = 181
        save_pair(image, label, root / "images" / split / f"{i:012d}.jpg",
                  root / "annotations" / split / f"{i:012d}.png", palette=False)
    return root


def test_voc_reads_palette_indices_and_pixels(tmp_path):
    write_voc(tmp_path)
    train = sd.voc(tmp_path, "train")
    assert [p[0].name for p in train.examples] == ["a.jpg", "b.jpg"]
    assert train.classes == 21 and sd.voc_training_split(tmp_path) == "train"
    image, label = train.read(1)
    expected_image, expected_label = scene(1)
    np.testing.assert_array_equal(label, expected_label)   # indices 0, 2, 255: not palette colours
    assert set(np.unique(label)) == {0, 2, 255}
    assert image.dtype == np.uint8 and image.shape == (20, 24, 3)
    assert np.abs(image.astype(int) - expected_image).max() <= JPEG_TOLERANCE
    assert len(sd.voc(tmp_path, "val")) == 1


def test_voc_train_aug_when_present(tmp_path):
    write_voc(tmp_path, aug=("d", "e"))
    assert sd.voc_training_split(tmp_path) == "train_aug"
    aug = sd.voc(tmp_path, "train_aug")
    assert [p[1].parent.name for p in aug.examples] == ["SegmentationClassAug"] * 2
    np.testing.assert_array_equal(aug.read(0)[1], scene(5)[1])


def test_coco_stuff_reads_labels_up_to_181(tmp_path):
    write_coco_stuff(tmp_path)
    val = sd.coco_stuff(tmp_path, "val2017")
    assert val.classes == 182 and len(val) == 2
    assert set(np.unique(val.read(0)[1])) == {0, 181, 255}


@pytest.mark.parametrize("remove, message", [
    ("VOC2012", "the VOC directory"),
    ("VOC2012/JPEGImages", "the image directory"),
    ("VOC2012/SegmentationClass", "the label directory"),
    ("VOC2012/ImageSets/Segmentation/train.txt", "the list"),
    ("VOC2012/JPEGImages/b.jpg", "train.txt line 2 names"),
])
def test_a_missing_part_of_the_voc_tree_is_named(tmp_path, remove, message):
    write_voc(tmp_path)
    path = tmp_path / remove
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    with pytest.raises(ValueError) as error:
        sd.voc(tmp_path, "train")
    assert message in str(error.value) and "\n" not in str(error.value)
    assert str(path.name) in str(error.value)


def test_missing_coco_stuff_parts_and_bad_splits(tmp_path):
    with pytest.raises(ValueError, match="the image directory .*images/val2017 does not exist"):
        sd.coco_stuff(tmp_path, "val2017")
    write_coco_stuff(tmp_path)
    (tmp_path / "annotations" / "val2017" / f"{1:012d}.png").unlink()
    with pytest.raises(ValueError, match="the label .*000000000001.png of image"):
        sd.coco_stuff(tmp_path, "val2017")
    with pytest.raises(ValueError, match="'test' is not one of train2017, val2017"):
        sd.coco_stuff(tmp_path, "test")
    with pytest.raises(ValueError, match="'trainval' is not one of train, val, train_aug"):
        sd.voc(tmp_path, "trainval")


def test_bad_labels_and_sizes_are_one_line(tmp_path):
    image, label = scene(0)
    label[5, 5] = 21
    save_pair(image, label, tmp_path / "x.jpg", tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"x.png: label value 21 is outside \[0, 21\)"):
        sd.read_example(tmp_path / "x.jpg", tmp_path / "x.png", 21)
    save_pair(image[:, :-2], scene(0)[1], tmp_path / "y.jpg", tmp_path / "y.png")
    with pytest.raises(ValueError, match="y.jpg is 22x20 but its label .*y.png is 24x20"):
        sd.read_example(tmp_path / "y.jpg", tmp_path / "y.png", 21)
    Image.fromarray(image).save(tmp_path / "z.png")
    with pytest.raises(ValueError, match="z.png: a label PNG must hold class ids .* mode is RGB"):
        sd.read_example(tmp_path / "x.jpg", tmp_path / "z.png", 21)


def test_the_voc_palette_is_the_devkits():
    palette = np.reshape(sd.voc_palette(), (256, 3))
    assert palette[:3].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    assert palette[15].tolist() == [192, 128, 128] and palette[255].tolist() == [224, 224, 192]


def test_resizes_follow_cv2_and_pil():
    image = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    np.testing.assert_allclose(sd.resize_bilinear(image, 2, 2)[..., 0], [[2.5, 4.5], [10.5, 12.5]])
    # Upscaling ×2: pixel centres at (i + ½)/2 − ½, clamped at the edges (cv2 INTER_LINEAR).
    np.testing.assert_allclose(sd.resize_bilinear(image[:1, :2], 1, 4)[0, :, 0], [0, 0.25, 0.75, 1])
    label = np.arange(9, dtype=np.uint8).reshape(3, 3)
    np.testing.assert_array_equal(sd.resize_nearest(label, 6, 6),
                                  np.asarray(Image.fromarray(label).resize((6, 6), Image.NEAREST)))
    np.testing.assert_array_equal(sd.resize_nearest(label, 2, 2),
                                  np.asarray(Image.fromarray(label).resize((2, 2), Image.NEAREST)))


def test_a_pattern_survives_scale_crop_and_flip_at_the_same_place():
    # Each pixel's image value encodes its class: image = 10 · label, so any misalignment of
    # image and label shows. Scale 1 keeps values exact (interpolation at the pixel centres).
    rng = np.random.default_rng(0)
    label = rng.integers(0, 21, (30, 40)).astype(np.uint8)
    image = np.repeat(10.0 * label[..., None], 3, axis=-1)
    flips = 0
    for seed in range(20):
        out_image, out_label = sd.augment(image, label, np.random.default_rng(seed), crop_size=16, scales=(1.0,))
        assert out_image.shape == (16, 16, 3) and out_label.shape == (16, 16)
        np.testing.assert_array_equal(out_image[..., 0], 10.0 * out_label)
        # the crop is a window of the original, mirrored or not
        windows = np.lib.stride_tricks.sliding_window_view(label, (16, 16))
        plain = (windows == out_label).all(axis=(-2, -1)).any()
        mirrored = (windows == out_label[:, ::-1]).all(axis=(-2, -1)).any()
        assert plain or mirrored
        flips += bool(mirrored and not plain)
    assert 0 < flips < 20   # both branches of the flip were taken


def test_padding_uses_the_mean_and_void_and_the_generator_decides_everything():
    image = np.full((10, 12, 3), 7, np.uint8)
    label = np.ones((10, 12), np.uint8)
    out_image, out_label = sd.augment(image, label, np.random.default_rng(3), crop_size=40, scales=(2.0,), flip=False)
    # scaled to 20x24, padded at the bottom and right to 40x40: the crop is the whole padded image
    np.testing.assert_array_equal(out_label[:20, :24], 1)
    assert (out_label[20:] == 255).all() and (out_label[:, 24:] == 255).all()
    np.testing.assert_allclose(out_image[:20, :24], 7)
    np.testing.assert_allclose(out_image[30, 30], sd.REFERENCE_MEAN, rtol=1e-6)
    first = sd.augment(image, label, np.random.default_rng(5), crop_size=8)
    again = sd.augment(image, label, np.random.default_rng(5), crop_size=8)
    np.testing.assert_array_equal(first[0], again[0])


def test_a_crop_larger_than_the_padded_image_and_bad_settings_are_one_line():
    with pytest.raises(ValueError, match="the crop 9x9 is larger than the padded image 8x6"):
        sd.random_crop(np.zeros((6, 8, 3)), np.zeros((6, 8)), 9, np.random.default_rng(0))
    with pytest.raises(ValueError, match="crop_size must be a positive integer; got 0"):
        sd.Augmentation(crop_size=0)
    with pytest.raises(ValueError, match="scales must be positive"):
        sd.Augmentation(scales=(0.5, -1))


def test_batches_are_deterministic_per_epoch_and_evaluate_full_images(tmp_path):
    write_voc(tmp_path, ids=("a", "b", "c", "d"), val=())
    split = sd.voc(tmp_path, "train")
    training = sd.SegmentationExamples(split, sd.Augmentation(crop_size=12), seed=1, shuffle=True)
    batches = sd.SegmentationBatches(training, batch_size=3)
    assert len(batches) == 2
    images, labels = batches[0]
    assert images.shape == (3, 12, 12, 3) and images.dtype == np.float32
    assert labels.shape == (3, 12, 12) and labels.dtype == np.int32
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4, 255}
    np.testing.assert_array_equal(labels, sd.SegmentationBatches(training, batch_size=3)[0][1])
    batches.on_epoch_end()
    assert not np.array_equal(batches[0][1], labels)     # epoch 1: another order and other crops
    resumed = sd.SegmentationBatches(training, batch_size=3, epoch=1)
    np.testing.assert_array_equal(resumed[0][1], batches[0][1])
    evaluation = sd.SegmentationBatches(sd.SegmentationExamples(split), batch_size=1)
    image, label = evaluation[2]
    np.testing.assert_array_equal(label[0], scene(2)[1])
    assert image.shape == (1, 20, 24, 3)


def test_images_of_different_sizes_cannot_share_an_evaluation_batch(tmp_path):
    write_voc(tmp_path, ids=("a", "b"), val=())
    save_pair(*scene(0, height=16), tmp_path / "VOC2012/JPEGImages/b.jpg", tmp_path / "VOC2012/SegmentationClass/b.png")
    batches = sd.SegmentationBatches(sd.SegmentationExamples(sd.voc(tmp_path, "train")), batch_size=2)
    with pytest.raises(ValueError, match="voc_train: images of different sizes .* batch_size 1"):
        batches[0]
