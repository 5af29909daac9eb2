"""Image encoders: (H, W, C) float32 patch → pooled embedding z (no activation after pooling).

``build_backbone(name, input_shape, name_prefix)`` returns a functional ``keras.Model`` named
``f"{name_prefix}{name}"`` so that two encoders (``opt_`` and ``sar_``) can live in one model.
All BatchNormalization layers are ``synchronized=True`` by default: on one device it is ordinary
batch norm, under ``tf.distribute.MirroredStrategy`` the batch statistics are those of the global
batch, so multi-replica training computes the same step as one device.
"""
from __future__ import annotations

import warnings
from typing import Callable

import keras
from keras import layers


def _bn(name: str, synchronized: bool, epsilon: float = 1e-5) -> layers.BatchNormalization:
    # momentum 0.9 = PyTorch's momentum 0.1, epsilon 1e-5 as in torchvision.
    return layers.BatchNormalization(momentum=0.9, epsilon=epsilon, synchronized=synchronized,
                                     name=name)


def resnet50(input_shape, name_prefix: str = "", synchronized_bn: bool = True) -> keras.Model:
    """``keras.applications.ResNet50`` (random init, any channel count), global average pool → 2048-d."""
    with warnings.catch_warnings():  # "usually expects 1 or 3 input channels": 12 and 2 are fine
        warnings.filterwarnings("ignore", message=".*input channels", category=UserWarning)
        model = keras.applications.ResNet50(include_top=False, weights=None, input_shape=tuple(input_shape),
                                            pooling="avg", name=f"{name_prefix}resnet50")
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            # Read at call time by BatchNormalization._moments; also reported by get_config.
            layer.synchronized = synchronized_bn
    return model


def resnet18(input_shape, name_prefix: str = "", synchronized_bn: bool = True) -> keras.Model:
    """torchvision's ResNet18 (basic blocks [2, 2, 2, 2], 64-128-256-512), first conv taking C channels.

    PyTorch's symmetric padding is reproduced with explicit ZeroPadding2D + "valid" convolutions.
    Global average pool → 512-d.
    """
    p = name_prefix
    inputs = keras.Input(tuple(input_shape), name=f"{p}input")
    x = layers.ZeroPadding2D(3, name=f"{p}conv1_pad")(inputs)
    x = layers.Conv2D(64, 7, strides=2, use_bias=False, name=f"{p}conv1")(x)
    x = _bn(f"{p}bn1", synchronized_bn)(x)
    x = layers.ReLU(name=f"{p}relu1")(x)
    x = layers.ZeroPadding2D(1, name=f"{p}pool_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name=f"{p}maxpool")(x)
    for stage, filters in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            n = f"{p}layer{stage}_{block}"
            shortcut = x
            y = layers.ZeroPadding2D(1, name=f"{n}_pad1")(x)
            y = layers.Conv2D(filters, 3, strides=stride, use_bias=False, name=f"{n}_conv1")(y)
            y = _bn(f"{n}_bn1", synchronized_bn)(y)
            y = layers.ReLU(name=f"{n}_relu1")(y)
            y = layers.ZeroPadding2D(1, name=f"{n}_pad2")(y)
            y = layers.Conv2D(filters, 3, use_bias=False, name=f"{n}_conv2")(y)
            y = _bn(f"{n}_bn2", synchronized_bn)(y)
            if stride != 1 or shortcut.shape[-1] != filters:
                shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                         name=f"{n}_down_conv")(shortcut)
                shortcut = _bn(f"{n}_down_bn", synchronized_bn)(shortcut)
            x = layers.Add(name=f"{n}_add")([y, shortcut])
            x = layers.ReLU(name=f"{n}_out")(x)
    z = layers.GlobalAveragePooling2D(name=f"{p}avg_pool")(x)
    return keras.Model(inputs, z, name=f"{p}resnet18")


def tiny(input_shape, name_prefix: str = "", synchronized_bn: bool = True,
         batch_norm: bool = True) -> keras.Model:
    """Small CNN for tests and the demo: 3×3/2 stem (16) then three 3×3/2 conv-BN-ReLU stages
    (16, 32, 64), global average pool → 64-d (about 28k parameters for 12 input channels).
    ``batch_norm=False`` drops the BN layers (convolutions get a bias instead)."""
    p = name_prefix
    inputs = keras.Input(tuple(input_shape), name=f"{p}input")
    x = inputs
    for i, filters in enumerate((16, 16, 32, 64)):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=not batch_norm,
                          name=f"{p}conv{i}")(x)
        if batch_norm:
            x = _bn(f"{p}bn{i}", synchronized_bn)(x)
        x = layers.ReLU(name=f"{p}relu{i}")(x)
    z = layers.GlobalAveragePooling2D(name=f"{p}avg_pool")(x)
    return keras.Model(inputs, z, name=f"{p}tiny")


BACKBONES: dict[str, Callable[..., keras.Model]] = {
    "resnet50": resnet50,
    "resnet18": resnet18,
    "tiny": tiny,
}


def build_backbone(name: str, input_shape, name_prefix: str = "", **kwargs) -> keras.Model:
    """Encoder ``name`` for inputs of ``input_shape`` (H, W, C); extra kwargs go to the builder
    (``synchronized_bn``, and ``batch_norm`` for ``tiny``)."""
    try:
        builder = BACKBONES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}") from None
    return builder(input_shape, name_prefix=name_prefix, **kwargs)
