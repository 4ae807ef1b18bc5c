"""One LaPerm(Adam) vs Adam comparison, end to end: training (comparison.py), the
summary (summary.py), the plots (plots.py) and ``results.json``; shared by train_mnist.py
and train_cifar10.py."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Dict, Optional

import torch
from comparison import (
    LABELS,
    METHODS,
    permuted_names,
    reconnected,
    rows_hold_initial_values,
    train,
    warm_up,
)
from mnist_common import environment, write_json
from plots import plot_accuracy, plot_profiles
from summary import check, columns, print_summary, protocol_name, summarise
from torch import nn

import laperm_kernels as lk


def run_comparison(
    args,
    data: Dict[str, Optional[tuple]],
    init_model: nn.Module,
    title: str,
    init_record: dict,
    augment=None,
) -> int:
    """Trains both methods from ``init_model`` on ``data`` ({"train", "val" (or None),
    "test"}: (x, y) each), writes results.json and the plots to ``args.out``; returns the
    exit status (summary.check)."""
    n_train = len(data["train"][0])
    steps_per_epoch = math.ceil(n_train / args.batch_size)
    params = dict(init_model.named_parameters())
    names = permuted_names(init_model, getattr(args, "permute_bias", False))
    sorted_inits = {n: lk.sort_rows(params[n]) for n in names}
    permuted = sum(s.numel() for s in sorted_inits.values())
    zeros = sum(int((s == 0).sum()) for s in sorted_inits.values())
    n_val = 0 if data.get("val") is None else len(data["val"][0])
    protocol = protocol_name(args.eval_every, args.k)
    print(
        f"{title}\ntrain {n_train}, val {n_val}, test {len(data['test'][0])}; "
        f"{sum(p.numel() for p in init_model.parameters()):,} params, {permuted:,} permuted, "
        f"{zeros / permuted:.1%} zero; {args.epochs} epochs x {steps_per_epoch} steps, "
        f"batch {args.batch_size}, k={args.k}, backend={args.backend}, "
        f"threads={torch.get_num_threads()}\nprotocol: {protocol}",
        flush=True,
    )

    warm_up(init_model, args, *data["train"])
    models = {m: copy.deepcopy(init_model) for m in METHODS}
    history = train(models, data, sorted_inits, args, augment)

    final_laperm = reconnected(models["laperm"], sorted_inits)
    invariant = rows_hold_initial_values(final_laperm, sorted_inits)
    summary = summarise(history, args.eval_every, args.k)
    ratio = summary["laperm"]["train_time_s"] / summary["adam"]["train_time_s"]
    print_summary(summary, ratio, invariant, protocol)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_accuracy(history, title, steps_per_epoch, out / "accuracy.png")
    plot_profiles(
        {
            "initial": init_model,
            "Adam-trained": models["adam"],
            "LaPerm(Adam)-trained (reconnected)": final_laperm,
        },
        title,
        out / "weight_profile.png",
    )
    methods = {}
    for m in METHODS:
        methods[m] = {"label": LABELS[m], **summary[m]}
        methods[m]["per_epoch"] = columns(history[m]["per_epoch"])
        if history[m]["per_eval"]:
            methods[m]["per_eval"] = columns(history[m]["per_eval"], skip="")
    config = {**vars(args), "steps_per_epoch": steps_per_epoch, "n_train": n_train}
    config.update(n_val=n_val, n_test=len(data["test"][0]))
    write_json(
        out / "results.json",
        {
            "config": config,
            "protocol": protocol,
            "init": {
                **init_record,
                "permuted": names,
                "permuted_weights": permuted,
                "zero_fraction": zeros / permuted,
            },
            "environment": environment(),
            "methods": methods,
            "laperm_vs_adam_time_ratio": ratio,
            "laperm_rows_hold_initial_values": invariant,
        },
    )
    print(f"wrote {out / 'results.json'}, {out / 'accuracy.png'}, {out / 'weight_profile.png'}")
    return check(summary, invariant, args.min_acc)
