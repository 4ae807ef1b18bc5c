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
