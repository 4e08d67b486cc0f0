"""Where the input's steps run, per Keras backend: the one object the readers, a run's input and its
model ask whether input goes through tf.data, and where resize, channels, augmentation and
preprocessing happen."""

from dataclasses import dataclass

# Keras (and data.input, which needs it) load on use: the data package's names, and so a config,
# are checked before any framework loads.


@dataclass(frozen=True)
class Placement:
    """Where a run's input steps run on the Keras backend `backend`.

    TensorFlow: tfds streams a split as a tf.data.Dataset, and the tf.data pipeline resizes, gives
    the model's channels, augments and preprocesses each batch on the host (`input_pipeline`); the
    model starts at its own input; a segmentation input is read through its tf.data form
    (`keras_input`). Any other backend: tfds's random-access data source (no
    TensorFlow), `ArrayBatches` of the examples as stored (variable-size images resized on the host
    so that they batch), and those steps are the model's first layers (`layers.input_layers`), on
    the device.
    """

    backend: str

    @property
    def tf_data(self):
        """Whether input goes through tf.data (else `ArrayBatches`)."""
        return self.backend == "tensorflow"

    @property
    def name(self):
        """The input's name in a record."""
        return "tf.data" if self.tf_data else "ArrayBatches"

    def inputs(self, sources, *, dataset, settings, seed, model, replicas=1):
        """(train, validation, test) batches of the three `sources` of `dataset` (a `DatasetInfo`)
        with `settings` (a dataset's settings) for `model` (a registry entry or a model function:
        its channels and preprocessing); the training input shuffled from `seed`; a source None
        stays None."""
        from ngl_keras.data.input import ArrayBatches, input_pipeline, recipe_pipeline

        train, validation, test = sources
        channels = model.channels if model.channels == 3 else dataset.channels
        if settings.recipe_augmentation:  # the ImageNet recipe's input steps (`recipe_input`)
            if not self.tf_data:
                return tuple(source if source is None else ArrayBatches(
                    source, classes=dataset.classes, batch_size=settings.batch_size, multiple=replicas,
                    shuffle_seed=seed if k == 0 else None, recipe=settings, training=k == 0, channels=channels)
                    for k, source in enumerate(sources))
            return tuple(source if source is None else recipe_pipeline(
                source, settings=settings, classes=dataset.classes, channels=channels, preprocess=model.preprocess,
                training=k == 0, shuffle_seed=seed if k == 0 else None) for k, source in enumerate(sources))
        if not self.tf_data:
            common = dict(classes=dataset.classes, batch_size=settings.batch_size,
                          image_size=settings.image_size if not dataset.fixed_size else None, multiple=replicas)
            return tuple(source if source is None else ArrayBatches(
                source, shuffle_seed=seed if k == 0 else None, **common) for k, source in enumerate(sources))
        augmentation = settings.augmentation
        common = dict(classes=dataset.classes, image_size=settings.image_size,
                      channels=model.channels if model.channels == 3 else dataset.channels,
                      preprocess=model.preprocess, batch_size=settings.batch_size, cache=settings.cache)
        return (input_pipeline(train, augmentation=augmentation if augmentation.active else None,
                               shuffle_seed=seed, **common),
                input_pipeline(validation, **common),
                None if test is None else input_pipeline(test, **common))

    def keras_input(self, batches):
        """What Keras reads (`fit`, `predict`) of a run's input `batches`: on tf.data, the tf.data
        form of an input that has one (`segmentation_data.SegmentationBatches.tf_dataset`: the same
        reader, many examples read at once); any other input (and None) as it is."""
        if self.tf_data and hasattr(batches, "tf_dataset"):
            return batches.tf_dataset()
        return batches

    def model(self, model, train_input, *, name, augmentation, seed, image_size=None, preprocess=None):
        """`model` (named `name`) behind the input steps the input did not do: none on tf.data;
        elsewhere augmentation (when active) and, for a registry model (`preprocess`: its registry
        name), resize, channels and preprocessing first. A model function (`preprocess` None) gets
        the examples as given."""
        if self.tf_data:
            return model
        import keras

        from ngl_keras import layers  # imports this package (Augmentation): loaded on use

        augmentation = augmentation if augmentation.active else None
        if preprocess is None and augmentation is None:
            return model
        inputs = keras.Input(train_input.image_shape)
        if preprocess is None:
            x = layers.RandomAffine(augmentation.horizontal_flip, augmentation.width_shift,
                                    augmentation.height_shift, augmentation.zoom, seed=seed, dtype="float32")(inputs)
        else:
            x = layers.input_layers(inputs, image_size=image_size, channels=model.input_shape[-1], model=preprocess,
                                    seed=seed, augmentation=augmentation)
        return keras.Model(inputs, model(x), name=name)


def placement():
    """The `Placement` of the current Keras backend."""
    import keras

    return Placement(keras.backend.backend())
