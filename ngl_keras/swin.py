"""The Swin Transformer (Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer using
Shifted Windows"), in Keras 3 with `keras.ops` only, so it runs on every backend.

It follows microsoft/Swin-Transformer's models/swin_transformer.py module by module: patch embedding
(a strided convolution and LayerNorm), stages of blocks that alternate regular and shifted window
attention with a relative position bias, patch merging between stages, LayerNorm, global average
pooling and the classifier. The same parameters in the same shapes: `swin_t` has 28,288,354 and
`swin_s` 49,606,258 with 1,000 classes, as the reference (its `relative_position_index` and
`attn_mask` are buffers, not parameters; here they are numpy constants).

    model = swin_t(num_classes=1000)          # 224 x 224 x 3 input, logits out
    model = swin_s(num_classes=1000)

Differs from the published code, on purpose:
- KerasHub's `SwinTransformerBackbone` is not used: keras-hub 0.32 declares `tensorflow-text` as a
  Linux dependency, which pulls TensorFlow into the TensorFlow-free `.[jax]` install.
- Images are channels-last and square (`image_size` is one number).
- The classifier outputs logits (`activation=None`) unless `classifier_activation` says otherwise,
  as keras.applications' `classifier_activation`.
"""

import keras
import numpy as np
from keras import ops

from ngl_keras.losses.base import PACKAGE

# Reference defaults (models/swin_transformer.py and config.py of microsoft/Swin-Transformer).
PATCH_SIZE = 4
WINDOW_SIZE = 7
MLP_RATIO = 4
LAYER_NORM_EPSILON = 1e-5          # torch.nn.LayerNorm's default (Keras's is 1e-3)
SHIFTED_MASK_VALUE = -100.0        # the reference's additive mask between regions that must not attend
INIT_STD = 0.02                    # trunc_normal_(std=.02) of every Linear and the bias table


def _truncated_normal():
    return keras.initializers.TruncatedNormal(stddev=INIT_STD)


def window_partition(x, window_size):
    """(B, H, W, C) -> (B * H/w * W/w, w, w, C): the non-overlapping windows, row by row."""
    _, height, width, channels = x.shape
    x = ops.reshape(x, (-1, height // window_size, window_size, width // window_size, window_size, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, window_size, window_size, channels))


def window_reverse(windows, window_size, height, width):
    """The inverse of `window_partition`: (B * H/w * W/w, w, w, C) -> (B, H, W, C)."""
    channels = windows.shape[-1]
    x = ops.reshape(windows, (-1, height // window_size, width // window_size, window_size, window_size, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, height, width, channels))


def relative_position_index(window_size):
    """(w*w, w*w) index into the (2w-1)^2 bias table for each pair of tokens of a window
    (the reference's `relative_position_index` buffer)."""
    coords = np.stack(np.meshgrid(np.arange(window_size), np.arange(window_size), indexing="ij")).reshape(2, -1)
    relative = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window_size - 1)
    return relative[:, :, 0] * (2 * window_size - 1) + relative[:, :, 1]


def shifted_window_mask(resolution, window_size, shift_size):
    """(windows, w*w, w*w) additive attention mask of shifted window attention: 0 between tokens
    of the same region before the cyclic shift, -100 between tokens that the shift brought together
    (the reference's `attn_mask`, built the same way on numpy)."""
    region = np.zeros((1, resolution, resolution, 1), dtype="float32")
    slices = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    for count, (h, w) in enumerate((h, w) for h in slices for w in slices):
        region[:, h, w, :] = count
    windows = np.asarray(window_partition(region, window_size)).reshape(-1, window_size * window_size)
    different = windows[:, None, :] != windows[:, :, None]
    return np.where(different, SHIFTED_MASK_VALUE, 0.0).astype("float32")


def stage_resolutions(image_size, num_stages, patch_size=PATCH_SIZE):
    return [image_size // patch_size // 2 ** i for i in range(num_stages)]


def check_image_size(image_size, window_size, num_stages, patch_size=PATCH_SIZE):
    """Raise a one-line ValueError unless every stage's token grid splits into whole windows (or is
    at most one window, which the reference then uses whole) and halves evenly at each merging."""
    grids = [image_size / patch_size / 2 ** i for i in range(num_stages)]
    fits = all(g == int(g) and (g <= window_size or g % window_size == 0) for g in grids)
    if not fits:
        fitting = patch_size * window_size * 2 ** (num_stages - 1)
        raise ValueError(f"swin: image_size {image_size} does not fit window {window_size} with patch {patch_size} "
                         f"and {num_stages} stages (token grids {', '.join(f'{g:g}' for g in grids)} must be "
                         f"whole multiples of the window or at most it); use a multiple of {fitting}, e.g. 224")


@keras.saving.register_keras_serializable(package=PACKAGE)
class StochasticDepth(keras.layers.Layer):
    """Stochastic depth (Huang et al. 2016; timm's DropPath): in training, drop the residual branch of
    a whole sample with probability `rate` and scale the kept ones by 1 / (1 - rate), so the
    expected output is the input; the identity at inference."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"StochasticDepth: rate {rate} is not in [0, 1)")
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        kept = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator, dtype=x.dtype))
        return x / keep * kept

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class WindowAttention(keras.layers.Layer):
    """Multi-head self-attention inside each window with a learned relative position bias
    (the reference's WindowAttention): input and output (windows, w*w, C)."""

    def __init__(self, dim, window_size, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.position_index = relative_position_index(window_size).reshape(-1)
        self.qkv = keras.layers.Dense(3 * dim, kernel_initializer=_truncated_normal(), name="qkv")
        self.proj = keras.layers.Dense(dim, kernel_initializer=_truncated_normal(), name="proj")

    def build(self, input_shape):
        # The name carries "relative_position_bias_table": the recipe keeps it out of weight decay.
        self.relative_position_bias_table = self.add_weight(
            shape=((2 * self.window_size - 1) ** 2, self.num_heads), initializer=_truncated_normal(),
            name="relative_position_bias_table")
        self.qkv.build(input_shape)
        self.proj.build(input_shape)

    def call(self, x, attention_mask=None):
        tokens = self.window_size ** 2
        head_dim = self.dim // self.num_heads
        qkv = ops.reshape(self.qkv(x), (-1, tokens, 3, self.num_heads, head_dim))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))                       # 3, windows, heads, tokens, head_dim
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attention = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))
        bias = ops.take(self.relative_position_bias_table, self.position_index, axis=0)
        bias = ops.transpose(ops.reshape(bias, (tokens, tokens, self.num_heads)), (2, 0, 1))
        attention = attention + ops.cast(bias, attention.dtype)[None]
        if attention_mask is not None:
            windows = attention_mask.shape[0]
            attention = ops.reshape(attention, (-1, windows, self.num_heads, tokens, tokens))
            attention = attention + ops.cast(attention_mask, attention.dtype)[None, :, None]
            attention = ops.reshape(attention, (-1, self.num_heads, tokens, tokens))
        attention = ops.softmax(attention, axis=-1)
        out = ops.reshape(ops.transpose(ops.matmul(attention, v), (0, 2, 1, 3)), (-1, tokens, self.dim))
        return self.proj(out)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "window_size": self.window_size,
                "num_heads": self.num_heads}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SwinBlock(keras.layers.Layer):
    """One Swin Transformer block on (B, H*W, C) tokens: LayerNorm, (shifted) window attention,
    residual with stochastic depth; LayerNorm, MLP (ratio 4, GELU), residual with stochastic depth.
    A grid no larger than the window is attended whole and never shifted, as in the reference."""

    def __init__(self, dim, resolution, num_heads, window_size=WINDOW_SIZE, shift_size=0, mlp_ratio=MLP_RATIO,
                 drop_path=0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.resolution, self.num_heads = dim, resolution, num_heads
        self.mlp_ratio, self.drop_path = mlp_ratio, drop_path
        if resolution <= window_size:
            window_size, shift_size = resolution, 0
        self.window_size, self.shift_size = window_size, shift_size
        self.mask = shifted_window_mask(resolution, window_size, shift_size) if shift_size else None
        self.norm1 = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="norm1")
        self.attn = WindowAttention(dim, window_size, num_heads, name="attn")
        self.norm2 = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="norm2")
        self.fc1 = keras.layers.Dense(int(dim * mlp_ratio), activation="gelu", kernel_initializer=_truncated_normal(),
                                      name="fc1")
        self.fc2 = keras.layers.Dense(dim, kernel_initializer=_truncated_normal(), name="fc2")
        self.stochastic_depth = StochasticDepth(drop_path, name="drop_path")

    def build(self, input_shape):
        self.norm1.build(input_shape)
        self.attn.build((None, self.window_size ** 2, self.dim))
        self.norm2.build(input_shape)
        self.fc1.build(input_shape)
        self.fc2.build(input_shape[:-1] + (int(self.dim * self.mlp_ratio),))

    def call(self, x, training=None):
        size, w, s = self.resolution, self.window_size, self.shift_size
        shortcut = x
        x = ops.reshape(self.norm1(x), (-1, size, size, self.dim))
        if s:
            x = ops.roll(x, shift=(-s, -s), axis=(1, 2))
        windows = ops.reshape(window_partition(x, w), (-1, w * w, self.dim))
        windows = self.attn(windows, attention_mask=self.mask)
        x = window_reverse(ops.reshape(windows, (-1, w, w, self.dim)), w, size, size)
        if s:
            x = ops.roll(x, shift=(s, s), axis=(1, 2))
        x = shortcut + self.stochastic_depth(ops.reshape(x, (-1, size * size, self.dim)), training=training)
        return x + self.stochastic_depth(self.fc2(self.fc1(self.norm2(x))), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "resolution": self.resolution,
                "num_heads": self.num_heads, "window_size": self.window_size, "shift_size": self.shift_size,
                "mlp_ratio": self.mlp_ratio, "drop_path": self.drop_path}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PatchMerging(keras.layers.Layer):
    """Halve the token grid and double the channels: concatenate each 2x2 neighbourhood (in the
    reference's order x0, x1, x2, x3), LayerNorm, then a linear map 4C -> 2C without bias."""

    def __init__(self, dim, resolution, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.resolution = dim, resolution
        self.norm = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="norm")
        self.reduction = keras.layers.Dense(2 * dim, use_bias=False, kernel_initializer=_truncated_normal(),
                                            name="reduction")

    def build(self, input_shape):
        self.norm.build((None, None, 4 * self.dim))
        self.reduction.build((None, None, 4 * self.dim))

    def call(self, x):
        x = ops.reshape(x, (-1, self.resolution, self.resolution, self.dim))
        x = ops.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
        x = ops.reshape(x, (-1, (self.resolution // 2) ** 2, 4 * self.dim))
        return self.reduction(self.norm(x))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], (self.resolution // 2) ** 2, 2 * self.dim)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "resolution": self.resolution}


def swin_transformer(image_size=224, num_classes=1000, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                     window_size=WINDOW_SIZE, patch_size=PATCH_SIZE, mlp_ratio=MLP_RATIO, drop_path_rate=0.1,
                     classifier_activation=None, name="swin_transformer"):
    """A Swin Transformer classifier for (image_size, image_size, 3) images. Stochastic depth rises
    linearly over all blocks from 0 to `drop_path_rate` (the reference's decay rule)."""
    if len(depths) != len(num_heads):
        raise ValueError(f"swin: depths {list(depths)} and num_heads {list(num_heads)} differ in length")
    check_image_size(image_size, window_size, len(depths), patch_size)
    rates = np.linspace(0.0, drop_path_rate, sum(depths))
    fan_in = 3 * patch_size * patch_size
    bound = fan_in ** -0.5  # torch.nn.Conv2d's default initialisation (the reference leaves the stem to it)

    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Conv2D(embed_dim, patch_size, strides=patch_size, name="patch_embed",
                            kernel_initializer=keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"),
                            bias_initializer=keras.initializers.RandomUniform(-bound, bound))(inputs)
    resolution = image_size // patch_size
    x = keras.layers.Reshape((resolution * resolution, embed_dim))(x)
    x = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="patch_embed_norm")(x)
    block = 0
    for stage, (depth, heads) in enumerate(zip(depths, num_heads)):
        dim = embed_dim * 2 ** stage
        for i in range(depth):
            x = SwinBlock(dim, resolution, heads, window_size, shift_size=0 if i % 2 == 0 else window_size // 2,
                          mlp_ratio=mlp_ratio, drop_path=float(rates[block]), name=f"stage{stage}_block{i}")(x)
            block += 1
        if stage < len(depths) - 1:
            x = PatchMerging(dim, resolution, name=f"stage{stage}_merging")(x)
            resolution //= 2
    x = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="norm")(x)
    x = keras.layers.GlobalAveragePooling1D(name="avgpool")(x)
    outputs = keras.layers.Dense(num_classes, activation=classifier_activation, kernel_initializer=_truncated_normal(),
                                 name="head")(x)
    return keras.Model(inputs, outputs, name=name)


def swin_t(image_size=224, num_classes=1000, classifier_activation=None):
    """Swin-T: embed 96, depths [2, 2, 6, 2], heads [3, 6, 12, 24], stochastic depth 0.2 (the published
    configs/swin/swin_tiny_patch4_window7_224.yaml)."""
    return swin_transformer(image_size, num_classes, 96, (2, 2, 6, 2), (3, 6, 12, 24), drop_path_rate=0.2,
                            classifier_activation=classifier_activation, name="swin_t")


def swin_s(image_size=224, num_classes=1000, classifier_activation=None):
    """Swin-S: embed 96, depths [2, 2, 18, 2], heads [3, 6, 12, 24], stochastic depth 0.3 (the published
    configs/swin/swin_small_patch4_window7_224.yaml)."""
    return swin_transformer(image_size, num_classes, 96, (2, 2, 18, 2), (3, 6, 12, 24), drop_path_rate=0.3,
                            classifier_activation=classifier_activation, name="swin_s")
