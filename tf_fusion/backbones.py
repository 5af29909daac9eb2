"""Image encoders split at a fusion stage: the branch before it, the shared trunk after it.

A ResNet is a stem followed by four residual stages. Fusing after stage k ∈ {1, …, 5} (the
authors' extension) means:

- ``build_branch(name, shape, prefix, stage=k)``: the stem and the first k − 1 residual stages
  (k = 1: the stem only), one per modality; at k = 5 all four stages and global average pooling,
  the pooled embedding of the paper;
- ``build_trunk(name, shape, stage=k)``: the remaining residual stages k … 4 of ONE shared ResNet
  whose first block takes the concatenated maps of both branches (twice the channels; its
  projection shortcut absorbs the change), then global average pooling; None at k = 5.

Backbones: ``resnet50`` (branches are ``keras.applications.ResNet50`` cut at its stage outputs by
layer name; the trunk repeats its bottleneck blocks), ``resnet18`` (torchvision's layout, as the
authors' code), ``tiny`` (a stem and four single-conv stages, for tests and the demo). Every
model is functional and named ``f"{prefix}{name}"``. All BatchNormalization layers are
``synchronized=True`` by default: ordinary batch norm on one device, global-batch statistics
under ``tf.distribute.MirroredStrategy``.
"""
from __future__ import annotations

import warnings

import keras
from keras import layers

STAGES = (1, 2, 3, 4, 5)
FINAL_STAGE = 5  # fusion of the pooled embeddings: no trunk
# keras.applications.ResNet50: the layer that ends the stem and each residual stage
_RESNET50_STAGE_ENDS = ("pool1_pool", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out")
_RESNET50_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (filters, blocks, stride) of conv2 … conv5
_RESNET18_STAGES = (64, 128, 256, 512)
_TINY = {"stem": 16, "stages": ((16, 2), (32, 2), (64, 2), (64, 1))}  # (filters, stride)


def check_stage(stage) -> int:
    if isinstance(stage, bool) or stage not in STAGES:
        raise ValueError(f"fusion stage must be one of {', '.join(map(str, STAGES))}; got {stage!r}")
    return int(stage)


def _bn(name: str, synchronized: bool, epsilon: float = 1e-5, momentum: float = 0.9) -> layers.BatchNormalization:
    # momentum 0.9 = PyTorch's momentum 0.1, epsilon 1e-5 as in torchvision.
    return layers.BatchNormalization(momentum=momentum, epsilon=epsilon, synchronized=synchronized, name=name)


# ------------------------------------------------------------------------------ ResNet50
def _resnet50_branch(input_shape, prefix, stage, synchronized_bn):
    with warnings.catch_warnings():  # "usually expects 1 or 3 input channels": 12 and 2 are fine
        warnings.filterwarnings("ignore", message=".*input channels", category=UserWarning)
        model = keras.applications.ResNet50(include_top=False, weights=None, input_shape=tuple(input_shape),
                                            pooling="avg" if stage == FINAL_STAGE else None,
                                            name=f"{prefix}resnet50")
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            # Read at call time by BatchNormalization._moments; also reported by get_config.
            layer.synchronized = synchronized_bn
    if stage == FINAL_STAGE:
        return model
    return keras.Model(model.input, model.get_layer(_RESNET50_STAGE_ENDS[stage - 1]).output, name=f"{prefix}resnet50")


def _bottleneck(x, filters, stride, shortcut_conv, name, synchronized_bn):
    """keras.applications' ResNet50 v1 block (1×1, 3×3, 1×1 ×4, projection shortcut when asked)."""
    bn = lambda n: _bn(f"{name}_{n}", synchronized_bn, epsilon=1.001e-5, momentum=0.99)  # noqa: E731
    shortcut = x
    if shortcut_conv:
        shortcut = layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(x)
        shortcut = bn("0_bn")(shortcut)
    x = layers.Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv")(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(bn("1_bn")(x))
    x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_2_conv")(x)
    x = layers.Activation("relu", name=f"{name}_2_relu")(bn("2_bn")(x))
    x = bn("3_bn")(layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x))
    return layers.Activation("relu", name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, x]))


def _resnet50_stage(x, stage, prefix, synchronized_bn):
    filters, blocks, stride = _RESNET50_STAGES[stage - 1]
    for b in range(1, blocks + 1):
        x = _bottleneck(x, filters, stride if b == 1 else 1, b == 1, f"{prefix}conv{stage + 1}_block{b}", synchronized_bn)
    return x


# ------------------------------------------------------------------------------ ResNet18
def _resnet18_stem(x, prefix, synchronized_bn):
    x = layers.ZeroPadding2D(3, name=f"{prefix}conv1_pad")(x)
    x = layers.Conv2D(64, 7, strides=2, use_bias=False, name=f"{prefix}conv1")(x)
    x = layers.ReLU(name=f"{prefix}relu1")(_bn(f"{prefix}bn1", synchronized_bn)(x))
    x = layers.ZeroPadding2D(1, name=f"{prefix}pool_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name=f"{prefix}maxpool")(x)


def _resnet18_stage(x, stage, prefix, synchronized_bn):
    """Two basic blocks; PyTorch's symmetric padding as explicit ZeroPadding2D + "valid" convs."""
    filters = _RESNET18_STAGES[stage - 1]
    for block in range(2):
        stride = 2 if stage > 1 and block == 0 else 1
        n = f"{prefix}layer{stage}_{block}"
        shortcut = x
        y = layers.ZeroPadding2D(1, name=f"{n}_pad1")(x)
        y = layers.Conv2D(filters, 3, strides=stride, use_bias=False, name=f"{n}_conv1")(y)
        y = layers.ReLU(name=f"{n}_relu1")(_bn(f"{n}_bn1", synchronized_bn)(y))
        y = layers.ZeroPadding2D(1, name=f"{n}_pad2")(y)
        y = _bn(f"{n}_bn2", synchronized_bn)(layers.Conv2D(filters, 3, use_bias=False, name=f"{n}_conv2")(y))
        if stride != 1 or shortcut.shape[-1] != filters:
            shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{n}_down_conv")(shortcut)
            shortcut = _bn(f"{n}_down_bn", synchronized_bn)(shortcut)
        x = layers.ReLU(name=f"{n}_out")(layers.Add(name=f"{n}_add")([y, shortcut]))
    return x


# ------------------------------------------------------------------------------ tiny
def _conv_bn_relu(x, filters, stride, name, synchronized_bn, batch_norm=True):
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=not batch_norm, name=f"{name}_conv")(x)
    if batch_norm:
        x = _bn(f"{name}_bn", synchronized_bn)(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _tiny_stem(x, prefix, synchronized_bn, batch_norm=True):
    return _conv_bn_relu(x, _TINY["stem"], 2, f"{prefix}stem", synchronized_bn, batch_norm)


def _tiny_stage(x, stage, prefix, synchronized_bn, batch_norm=True):
    filters, stride = _TINY["stages"][stage - 1]
    return _conv_bn_relu(x, filters, stride, f"{prefix}stage{stage}", synchronized_bn, batch_norm)


_OWN = {"resnet18": (_resnet18_stem, _resnet18_stage), "tiny": (_tiny_stem, _tiny_stage)}
BACKBONES = ("resnet50", "resnet18", "tiny")


def _check_name(name: str) -> None:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}")


def build_branch(name: str, input_shape, name_prefix: str = "", stage: int = FINAL_STAGE,
                 synchronized_bn: bool = True, **kwargs) -> keras.Model:
    """One modality's encoder up to fusion stage ``stage`` (see the module docstring): a feature
    map [B, h, w, c] below stage 5, the pooled embedding [B, D] at stage 5. ``kwargs``:
    ``batch_norm=False`` for ``tiny`` (convolutions get a bias instead)."""
    _check_name(name)
    stage = check_stage(stage)
    if name == "resnet50":
        return _resnet50_branch(input_shape, name_prefix, stage, synchronized_bn)
    stem, block = _OWN[name]
    inputs = keras.Input(tuple(input_shape), name=f"{name_prefix}input")
    x = stem(inputs, name_prefix, synchronized_bn, **kwargs)
    for s in range(1, stage):
        x = block(x, s, name_prefix, synchronized_bn, **kwargs)
    if stage == FINAL_STAGE:
        x = layers.GlobalAveragePooling2D(name=f"{name_prefix}avg_pool")(x)
    return keras.Model(inputs, x, name=f"{name_prefix}{name}")


def build_trunk(name: str, input_shape, stage: int, name_prefix: str = "trunk_", synchronized_bn: bool = True,
                **kwargs) -> keras.Model | None:
    """The shared rest of the network after fusion stage ``stage`` on the concatenated maps
    ``input_shape`` (h, w, 2c): residual stages ``stage`` … 4, global average pooling → [B, D].
    None at stage 5 (the fused embeddings go straight to the classifier)."""
    _check_name(name)
    stage = check_stage(stage)
    if stage == FINAL_STAGE:
        return None
    block = _resnet50_stage if name == "resnet50" else _OWN[name][1]
    inputs = keras.Input(tuple(input_shape), name=f"{name_prefix}input")
    x = inputs
    for s in range(stage, FINAL_STAGE):
        x = block(x, s, name_prefix, synchronized_bn, **kwargs)
    x = layers.GlobalAveragePooling2D(name=f"{name_prefix}avg_pool")(x)
    return keras.Model(inputs, x, name=f"{name_prefix}{name}")


def build_backbone(name: str, input_shape, name_prefix: str = "", **kwargs) -> keras.Model:
    """The whole encoder (stage 5 branch): input → pooled embedding."""
    return build_branch(name, input_shape, name_prefix, FINAL_STAGE, **kwargs)
