"""The tf.data input path gives the same batches as the PyDataset (TensorFlow only)."""

import numpy as np
import tensorflow as tf

from ngl_keras import segmentation_data as sd
from tests.test_segmentation_data import write_voc


def test_tf_dataset_gives_the_pydataset_batches_epoch_by_epoch(tmp_path):
    write_voc(tmp_path, ids=("a", "b", "c", "d", "e"), val=())
    examples = sd.SegmentationExamples(sd.voc(tmp_path, "train"), sd.Augmentation(crop_size=10), seed=4, shuffle=True)
    expected = []
    for epoch in (1, 2):
        batches = sd.SegmentationBatches(examples, batch_size=2, epoch=epoch)
        expected += [batches[i] for i in range(len(batches))]
    got = list(sd.tf_dataset(examples, batch_size=2, epochs=2, first_epoch=1).as_numpy_iterator())
    assert [labels.shape[0] for _, labels in got] == [2, 2, 1, 2, 2, 1]   # no batch spans two epochs
    for (image, label), (want_image, want_label) in zip(got, expected):
        np.testing.assert_array_equal(label, want_label)
        np.testing.assert_array_equal(image, want_image)
    assert isinstance(sd.tf_dataset(examples, batch_size=2), tf.data.Dataset)
