"""Input: batches of a split for `model.fit`, as a tf.data pipeline or as `ArrayBatches`."""

import keras
import numpy as np


def input_pipeline(source, *, classes, image_size, channels, preprocess, batch_size,
                   augmentation=None, shuffle_seed=None, cache=True):
    """A batched tf.data pipeline of (preprocessed float images, one-hot labels).

    Raw uint8 examples are cached (variable-size images first resized, so that they batch),
    shuffled when `shuffle_seed` is given, batched, and then resized, given `channels`,
    augmented (training only) and preprocessed a whole batch at a time, in parallel with
    training (prefetch). `image_size` None keeps the examples' shape (in-memory arrays that are
    not images).
    """
    import tensorflow as tf

    if isinstance(source, tuple):
        images, labels = source
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        fixed = True
    else:
        ds = source
        shape = ds.element_spec[0].shape
        fixed = shape[0] is not None and shape[1] is not None
    if not fixed:
        ds = ds.map(lambda x, y: (tf.cast(tf.image.resize(x, (image_size, image_size)), tf.uint8), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(10_000, seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augmentation is not None:
        # One stateless seed per batch: reproducible for a given seed, new in every epoch.
        seeds = tf.data.Dataset.random(seed=shuffle_seed or 0, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, seeds).map(lambda xy, s: (xy[0], xy[1], s))
    else:
        ds = ds.map(lambda x, y: (x, y, tf.constant(0, tf.int64)))

    def transform(x, y, seed):
        x = tf.cast(x, tf.float32)
        if image_size is not None and (x.shape[1] != image_size or x.shape[2] != image_size):
            x = tf.image.resize(x, (image_size, image_size))
        if x.shape[-1] == 1 and channels == 3:
            x = tf.image.grayscale_to_rgb(x)
        if augmentation is not None:
            x = augmentation(x, seed)
        return preprocess(x), tf.one_hot(tf.cast(y, tf.int32), classes)

    return ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def recipe_pipeline(source, *, settings, classes, channels, preprocess, training, shuffle_seed=None):
    """The tf.data pipeline of the ImageNet recipe (`recipe_input`): each image cropped (random-resized
    when `training`, else resized and centre-cropped; resized whole without `crop`), batched, each
    training batch augmented and mixed, then preprocessed; (images, targets that sum to one)."""
    import tensorflow as tf

    from ngl_keras.data import recipe_input

    ds = tf.data.Dataset.from_tensor_slices(source) if isinstance(source, tuple) else source
    size = settings.image_size
    if settings.cache:
        ds = ds.cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(10_000, seed=shuffle_seed, reshuffle_each_iteration=True)
    if settings.crop is None:
        ds = ds.map(lambda x, y: (tf.image.resize(tf.cast(x, tf.float32), (size, size)), y))
    elif training:  # one stateless seed per image: reproducible for a given seed, new in every epoch
        seeds = tf.data.Dataset.random(seed=shuffle_seed or 0, rerandomize_each_iteration=True)
        uniforms = lambda s: tf.random.stateless_uniform((4 * recipe_input.imagenet_recipe.CROP_ATTEMPTS,),  # noqa: E731
                                                          tf.stack([s, tf.constant(0, tf.int64)]))
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda xy, s: (recipe_input.crop(xy[0], settings, True, tf.reshape(uniforms(s), (-1, 4))), xy[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda x, y: (recipe_input.crop(x, settings, False), y), num_parallel_calls=tf.data.AUTOTUNE)
    if channels == 3:
        ds = ds.map(lambda x, y: (tf.image.grayscale_to_rgb(x) if x.shape[-1] == 1 else x, y))
    ds = ds.batch(settings.batch_size)
    if training:
        augment = recipe_input.BatchAugmentation(settings, classes, seed=shuffle_seed)
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda x, y: (x, tf.one_hot(tf.cast(y, tf.int32), classes)))
    return ds.map(lambda x, y: (preprocess(x), y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# Input on any backend: batches from arrays (or a RecordSource) for the model's input layers.

def _resized(image, size):
    """`image` (h, w, c) uint8 at size × size, bilinear (variable-size datasets only)."""
    from PIL import Image

    if image.shape[:2] == (size, size):
        return image
    channels = image.shape[-1]
    out = Image.fromarray(image[..., 0] if channels == 1 else image).resize((size, size), Image.BILINEAR)
    return np.asarray(out).reshape(size, size, channels)


def _process():
    """(this process's index, processes) of JAX's distributed runtime; (0, 1) elsewhere."""
    if keras.backend.backend() != "jax":
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()


class ArrayBatches(keras.utils.PyDataset):
    """Batches of (float32 images, one-hot labels) for `model.fit` on any Keras backend.

    The images stay as they are stored (native size and channels, uint8 until batched): resizing,
    channels, augmentation and preprocessing are the model's input layers (`layers.input_layers`),
    so they run on the accelerator. Variable-size images are resized to `image_size` here, on the
    host, so that they batch. With `shuffle_seed`, epoch e visits the examples in the order of
    `np.random.default_rng([shuffle_seed, e])`: the same order whether a run went straight through
    or was resumed at epoch e (`set_epoch`). `multiple` trims a batch to a multiple of the replica
    count (data parallelism splits each batch evenly): the last batch loses at most
    `multiple` − 1 examples (other ones each epoch when shuffled).
    """

    def __init__(self, source, *, classes, batch_size, image_size=None, shuffle_seed=None, multiple=1,
                 recipe=None, training=False, channels=None):
        super().__init__()
        self.source, self.classes, self.batch_size = source, classes, batch_size
        self.image_size, self.shuffle_seed, self.multiple = image_size, shuffle_seed, multiple
        self.epoch, self._order = 0, None
        # The ImageNet recipe's steps (`recipe_input`), when `recipe` (a dataset's settings) has them on:
        # each image cropped here, each training batch augmented and mixed here, on the backend's tensors.
        self.recipe, self.training, self.channels = recipe, training, channels
        self.process, self.processes = _process()
        if recipe is not None:
            from ngl_keras.data import recipe_input

            self._augment = recipe_input.BatchAugmentation(recipe, classes, shuffle_seed) if training else None
        first = self._read(np.arange(min(1, len(self))))[0]
        self.image_shape = tuple(first.shape[1:])

    @property
    def size(self):
        source = self.source
        return len(source[1]) if isinstance(source, tuple) else len(source)

    @property
    def used(self):
        """Examples per epoch: all of them, less what makes the last batch a multiple of `multiple`."""
        rest = self.size % self.batch_size
        return self.size - rest % self.multiple

    def __len__(self):
        return -(-self.used // self.batch_size)

    def set_epoch(self, epoch):
        if epoch != self.epoch:
            self.epoch, self._order = epoch, None

    def order(self):
        if self._order is None:
            self._order = np.arange(self.size) if self.shuffle_seed is None else \
                np.random.default_rng([self.shuffle_seed, self.epoch]).permutation(self.size)
        return self._order

    def _read(self, indices):
        if self.recipe is not None:
            return self._read_recipe(indices)
        if isinstance(self.source, tuple):
            images, labels = self.source[0][indices], self.source[1][indices]
        else:
            images, labels = self.source.read(indices)
            size = self.image_size or images[0].shape[0]
            images = np.stack([_resized(image, size) for image in images])
        return images.astype("float32"), np.eye(self.classes, dtype="float32")[labels]

    def _read_recipe(self, indices):
        from ngl_keras.data import recipe_input

        if isinstance(self.source, tuple):
            images, labels = list(self.source[0][indices]), self.source[1][indices]
        else:
            images, labels = self.source.read(indices)
        rng = np.random.default_rng([self.shuffle_seed or 0, self.epoch, int(indices[0]) if len(indices) else 0])
        size = self.recipe.image_size
        if self.recipe.crop is None:
            images = np.stack([_resized(image, size) for image in images])
        else:
            images = np.stack([recipe_input.crop_on_host(np.asarray(image), self.recipe, self.training, rng)
                               for image in images])
        if self.channels == 3 and images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        if self._augment is not None:
            return recipe_input.as_numpy(*self._augment(images.astype("float32"), labels))
        return images.astype("float32"), np.eye(self.classes, dtype="float32")[labels]

    def __getitem__(self, index):
        start = index * self.batch_size
        rows = self.order()[start: min(start + self.batch_size, self.used)]
        if self.processes > 1:  # several JAX processes: each feeds its share of the global batch
            share = len(rows) // self.processes
            rows = rows[self.process * share: (self.process + 1) * share]
        return self._read(rows)

    def on_epoch_end(self):
        self.set_epoch(self.epoch + 1)
