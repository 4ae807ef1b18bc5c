"""One LaPerm(Adam) vs Adam comparison, end to end: training (comparison.py), the
summary (summary.py), the plots (plots.py) and ``results.json``; shared by train_mnist.py
and train_cifar10.py."""

from __future__ import annotations

import copy
import io
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

    config = {**vars(args), "steps_per_epoch": steps_per_epoch, "n_train": n_train}
    config.update(n_val=n_val, n_test=len(data["test"][0]))
    init = {**init_record, "permuted": names, "permuted_weights": permuted}
    init["zero_fraction"] = zeros / permuted
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def record(history, invariant=None) -> dict:
        summary = summarise(history, args.eval_every, args.k)
        methods = {}
        for m in METHODS:
            methods[m] = {"label": LABELS[m], **summary[m]}
            methods[m]["per_epoch"] = columns(history[m]["per_epoch"])
            if history[m]["per_eval"]:
                methods[m]["per_eval"] = columns(history[m]["per_eval"], skip="")
        return {
            "config": config,
            "epochs_completed": len(history["laperm"]["per_epoch"]),
            "protocol": protocol,
            "init": init,
            "environment": environment(),
            "methods": methods,
            "laperm_vs_adam_time_ratio": summary["laperm"]["train_time_s"]
            / summary["adam"]["train_time_s"],
            "laperm_rows_hold_initial_values": invariant,
        }

    warm_up(init_model, args, *data["train"])
    models = {m: copy.deepcopy(init_model) for m in METHODS}
    # results.json after every epoch: a long run stopped early keeps what it measured
    history = train(
        models,
        data,
        sorted_inits,
        args,
        augment,
        lambda h: write_json(out / "results.json", record(h)),
    )

    final_laperm = reconnected(models["laperm"], sorted_inits)
    invariant = rows_hold_initial_values(final_laperm, sorted_inits)
    result = record(history, invariant)
    result["laperm_wiring"] = wiring_record(final_laperm, init_model, sorted_inits, data["test"])
    summary = summarise(history, args.eval_every, args.k)
    print_summary(summary, result["laperm_vs_adam_time_ratio"], invariant, protocol)
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
    write_json(out / "results.json", result)
    print(f"wrote {out / 'results.json'}, {out / 'accuracy.png'}, {out / 'weight_profile.png'}")
    return check(summary, invariant, args.min_acc)


def wiring_record(trained: nn.Module, init_model: nn.Module, sorted_inits, test) -> dict:
    """The trained LaPerm network saved as its wiring (lk.wiring) plus the parameters it
    does not permute (biases: trained freely), against its state_dict: torch.save bytes,
    and the network rebuilt from that checkpoint alone (lk.rewire_ into a copy of the
    initial model, S sorted again from it, as the seed would remake it): bit-identical
    weights and its test accuracy."""
    from comparison import accuracy

    def saved_bytes(obj) -> int:
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getbuffer().nbytes

    wired = lk.wiring(trained, sorted_inits, include_sorted=False)
    rest = {n: t for n, t in trained.state_dict().items() if n not in wired["tensors"]}
    rebuilt = copy.deepcopy(init_model)
    rebuilt.load_state_dict(rest, strict=False)
    init_params = dict(init_model.named_parameters())
    lk.rewire_(rebuilt, wired, {n: lk.sort_rows(init_params[n]) for n in wired["tensors"]})
    trained_state = trained.state_dict()
    identical = all(
        torch.equal(t.reshape(-1).view(torch.uint8), trained_state[n].reshape(-1).view(torch.uint8))
        for n, t in rebuilt.state_dict().items()
    )
    return {
        "state_dict_bytes": saved_bytes(trained_state),
        "wiring_and_rest_bytes": saved_bytes({"wiring": wired, "rest": rest}),
        "wiring_with_sorted_and_rest_bytes": saved_bytes(
            {"wiring": lk.wiring(trained, sorted_inits), "rest": rest}
        ),
        "index_dtypes": {n: str(e["index"].dtype) for n, e in wired["tensors"].items()},
        "rest_params": sum(t.numel() for t in rest.values()),
        "rebuilt_bit_identical": identical,
        "rebuilt_test_acc": accuracy(rebuilt, *test),
    }
