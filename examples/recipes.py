"""The official notebooks' settings (ihsuy/Train-by-Reconnect, notebooks/) as option
defaults: ``--recipe NAME`` applies them and any option given on the command line wins.

Each recipe also names the paper's figure (the README's table of pre-trained weights) and
where the setting comes from. What the notebooks share: Keras Adam (epsilon 1e-7) with its
learning rate set per epoch, LaPerm's sync after step t when t % k == 0 (t from 1), the
test set evaluated every ``vali_freq`` steps with the best weights kept (``--eval-every``),
training on all 60,000 MNIST training images (``--train-on-val``: the 50k + 10k splits of
the pickle), biases permuted as one row each where a model has them (``skip_bias=False``
in the MNIST notebooks).
"""

from __future__ import annotations

from typing import Dict

MNIST_COMMON = {
    "lr": 1e-3,
    "lr_decay": 0.95,  # lr_schedule(epoch) = 1e-3 * 0.95 ** epoch
    "adam_eps": 1e-7,  # Keras Adam's default
    "loss_sum": True,  # tape.gradient of the per-example loss vector: its sum's gradient
    "train_on_val": True,
}

MNIST_RECIPES: Dict[str, dict] = {
    # F1_and_F2.ipynb, first model: Dense(10, softmax, use_bias=False), agnosticize(0.08, (4, 7))
    "f1": {
        **MNIST_COMMON,
        "model": "f1",
        "agnostic": "0.08",
        "keep": "4/7",
        "mask": "bernoulli",
        "batch_size": 128,
        "k": 250,
        "epochs": 10,
        "eval_every": 250,
    },
    # F1_and_F2.ipynb, second model: 128-64-10 ReLU, no bias, l2(1e-4) on the first two
    "f2": {
        **MNIST_COMMON,
        "model": "f2",
        "agnostic": "0.03",
        "keep": "1/15,1/7,1/3",
        "mask": "bernoulli",
        "l2": "1e-4,1e-4,0",
        "batch_size": 128,
        "k": 250,
        "epochs": 25,
        "eval_every": 250,
    },
    # Conv7.ipynb: he_uniform kernels and biases, dropout 0.4, ImageDataGenerator
    # (rotation 10, zoom 0.1, shifts 0.1), batch 50, k 20 (the README's table says 1200)
    "conv7": {
        **MNIST_COMMON,
        "model": "conv7",
        "init": "keras",
        "dropout": 0.4,
        "augment": True,
        "permute_bias": True,
        "batch_size": 50,
        "k": 20,
        "epochs": 45,
        "eval_every": 100,
    },
}

PAPER_TOP1 = {"f1": 0.8546, "f2": 0.7814, "conv7": 0.9972}
PAPER_TOP1_CIFAR = {
    "conv2": 0.7821,
    "conv4": 0.8917,
    "conv13": 0.9221,
    "resnet": 0.9253,
    "resnet-p30": 0.9232,
    "resnet-p50": 0.9202,
    "resnet-p70": 0.9097,
}

# The CIFAR-10 notebooks: Keras Adam, batch 50, the test set evaluated every vali_freq
# steps, all 50,000 training images; LaPerm's defaults skip biases and BatchNorm
# (skip_bias=True, skip_bn=True); l2(1e-4) on every kernel but the output layer's.
CIFAR_COMMON = {
    "lr": 1e-3,
    "adam_eps": 1e-7,
    "loss_sum": True,
    "batch_size": 50,
    "l2": "1e-4",
    "augment": True,
}
_CONV = {
    **CIFAR_COMMON,
    "init": "keras-biases",  # he_uniform kernels and biases
    "normalise": "raw",  # their normalize() returns its inputs: pixels 0..255
    "lr_schedule": "conv",  # 1e-3 * 0.6 ** (epoch // 10)
    "k": 1000,
    "epochs": 125,
    "eval_every": 250,
    "augment_rotation": 15.0,  # ImageDataGenerator(rotation 15, shifts 0.1, hflip)
}
_RESNET = {
    **CIFAR_COMMON,
    "model": "resnet",
    "init": "keras",  # he_uniform kernels, zero biases
    "normalise": "pixel-mean",  # /255, minus the per-pixel training mean
    "lr_schedule": "resnet",
    "k": 800,  # the notebook's; the README's table gives 400 for the dense row
    "epochs": 200,
    "eval_every": 800,
    "augment_rotation": 0.0,  # ImageDataGenerator(shifts 0.1, hflip)
}
CIFAR_RECIPES: Dict[str, dict] = {
    "conv2": {**_CONV, "model": "conv2"},
    "conv4": {**_CONV, "model": "conv4"},
    "conv13": {**_CONV, "model": "conv13"},
    "resnet": _RESNET,
    # random_prune(model, prune_rate=keep): each weight kept with probability keep, the
    # first layer's at least 0.8
    "resnet-p30": {**_RESNET, "keep": 0.7},
    "resnet-p50": {**_RESNET, "keep": 0.5},
    "resnet-p70": {**_RESNET, "keep": 0.3},
}
