"""LaPerm inside real training frameworks: Hugging Face ``Trainer``, ``accelerate``, Lightning.

Each test trains a tiny model with LaPerm (sync period K) through the framework's own
training loop and checkpointing, three times:

1. one uninterrupted run of TOTAL steps;
2. a run that writes a checkpoint at step N (between two syncs) and stops there;
3. a restart from that checkpoint with everything fresh (a model built from another seed,
   a fresh inner optimizer, LaPerm and framework object), on to TOTAL steps.

and shows that

* LaPerm's state goes into the framework's checkpoint and comes back: run 3 ends with
  weights bit-identical to run 1. That needs the inner optimizer's moments, the step
  counter that schedules syncs, and the sorted initial rows S (the fresh model's S is
  another seed's, and would be wrong);
* the LaPerm beneath the framework's wrappers (``AcceleratedOptimizer``,
  ``LightningOptimizer``) still counts steps and syncs: after the last step (a sync
  step) every permuted weight's units (its rows along ``row_dim``; 1 for GPT-2's
  transformers ``Conv1D``, 0 for ``nn.Linear``/``nn.Conv2d``) are permutations of their
  initial values, and training did reorder every permuted weight;
* an LR scheduler on the wrapper keeps its place across the restart.

Models are built from configs and data is made in the test: nothing is downloaded. Each
test is skipped when its framework is not installed (``pip install -e ".[integrations]"``).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import laperm_kernels as lk
from tests.helpers import assert_bitwise_equal

pytestmark = [
    # Tiny models: one thread is fastest, and immune to a busy neighbour on the same cores.
    pytest.mark.usefixtures("one_thread"),
    # lightning 2.6 with torch >= 2.10: noise from Lightning's own use of torch's pytree
    pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated"),
]

K = 4  # sync period
N = 6  # steps before the checkpoint: not a multiple of K, so it falls between syncs
TOTAL = 12  # steps in all: a multiple of K, so the last step syncs
LR = 1e-2
BATCH = 4


def step_lr(opt):
    """The scheduler the accelerate and Lightning tests put on the LaPerm (stepped per step)."""
    return torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)


EXPECTED_LRS = [LR * 0.5 ** (t // 5) for t in range(TOTAL)]  # step_lr's lr at each step


# --- checks shared by the three tests ---------------------------------------------------


def laperm_under(opt) -> lk.LaPerm:
    """The LaPerm beneath a framework's optimizer wrappers (Lightning's wrapper is an
    instance of a subclass of the optimizer class it wraps)."""
    while type(opt) is not lk.LaPerm:
        opt = opt.optimizer
    return opt


def unit_rows(t: torch.Tensor, row_dim: int) -> torch.Tensor:
    """The units of a weight, one a row, as LaPerm permutes them."""
    t = t.detach().movedim(row_dim, 0)
    return t.reshape(t.shape[0], -1)


def check_synced(model: nn.Module, opt: lk.LaPerm, initial: nn.Module, row_dims) -> None:
    """``model`` (trained by ``opt``, right after a sync) against ``initial``, the same
    model untrained: the permuted weights and their row_dims are ``row_dims``
    ({name: row_dim}); every row of each holds exactly its initial values (S), yet each
    was reordered by training."""
    groups = {id(p): g.get("row_dim", 0) for g in opt.param_groups for p in g["params"]}
    permuted = {
        name: groups[id(p)] for name, p in model.named_parameters() if p in opt.sorted_inits
    }
    assert permuted == row_dims
    start = dict(initial.named_parameters())
    for name, p in model.named_parameters():
        if name in permuted:
            s = unit_rows(opt.sorted_inits[p], 0)
            assert_bitwise_equal(
                unit_rows(p, permuted[name]).sort(dim=1).values, s, f"{name}: sorted rows vs S"
            )
            assert_bitwise_equal(
                unit_rows(start[name], permuted[name]).sort(dim=1).values,
                s,
                f"{name}: sorted initial rows vs S",
            )
            assert not torch.equal(p, start[name]), f"{name} was not reordered"


def assert_same_weights(actual: nn.Module, expected: nn.Module) -> None:
    a, e = actual.state_dict(), expected.state_dict()
    assert a.keys() == e.keys()
    for name in a:
        assert_bitwise_equal(a[name], e[name], name)


# --- a tiny GPT-2 and token data (Hugging Face Trainer, accelerate) ---------------------

VOCAB, SEQ = 64, 16

# GPT-2's permuted weights: in each block, c_attn, attn.c_proj, c_fc and mlp.c_proj, all
# transformers Conv1D ([in, out]: row_dim=1). Embeddings (and lm_head, tied to wte) and
# the 1-D parameters are not permuted.
GPT2_ROW_DIMS = {
    f"transformer.h.{i}.{layer}.weight": 1
    for i in range(2)
    for layer in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
}


def tiny_gpt2(seed: int, dropout: float = 0.1):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
    )
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(config)


def gpt2_laperm(model) -> lk.LaPerm:
    return lk.LaPerm(torch.optim.AdamW(lk.param_groups(model), lr=LR), sync_period=K)


class TokenData(torch.utils.data.Dataset):
    """16 random token sequences (4 batches an epoch: step N is mid-epoch), as dicts of
    input_ids and labels (the model shifts the labels itself)."""

    def __init__(self):
        self.ids = torch.randint(
            0, VOCAB, (4 * BATCH, SEQ), generator=torch.Generator().manual_seed(0)
        )

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


# --- Hugging Face Trainer ---------------------------------------------------------------


def hf_train(output_dir, seed, *, stop_at=None, resume=None):
    """Trains a fresh tiny GPT-2 (weights from ``seed``, dropout on, shuffled data) with
    a Trainer to TOTAL steps, saving a checkpoint every N steps into ``output_dir``, from
    checkpoint ``resume`` if given. LaPerm(AdamW) goes in through ``optimizers``; the
    Trainer puts its default linear-decay scheduler (over TOTAL steps) on it. With
    ``stop_at``, a callback stops training there, as an interruption would.
    Returns (model, the LaPerm, the lr after the last step)."""
    transformers = pytest.importorskip("transformers")

    class StopAt(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == stop_at:
                control.should_training_stop = True

    model = tiny_gpt2(seed)
    opt = gpt2_laperm(model)
    args = transformers.TrainingArguments(
        output_dir=str(output_dir),
        max_steps=TOTAL,
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        seed=0,
        save_strategy="steps",
        save_steps=N,
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=TokenData(),
        optimizers=(opt, None),
        callbacks=[StopAt()],
    )
    trainer.train(resume_from_checkpoint=resume)
    assert trainer.state.global_step == (stop_at or TOTAL)
    assert laperm_under(trainer.optimizer) is opt  # inside accelerate's AcceleratedOptimizer
    assert opt.step_count == trainer.state.global_step
    return model, opt, trainer.lr_scheduler.get_last_lr()


def test_hf_trainer_resume_is_bit_identical(tmp_path):
    pytest.importorskip("transformers")
    model, opt, lr = hf_train(tmp_path / "whole", seed=1)
    check_synced(model, opt, tiny_gpt2(seed=1), GPT2_ROW_DIMS)

    hf_train(tmp_path / "split", seed=1, stop_at=N)
    checkpoint = tmp_path / "split" / f"checkpoint-{N}"
    saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)  # as Trainer loads it
    assert {g["laperm_step"] for g in saved["param_groups"]} == {N}
    assert sum("sorted_init" in s for s in saved["state"].values()) == len(GPT2_ROW_DIMS)

    resumed_model, resumed, resumed_lr = hf_train(
        tmp_path / "split", seed=2, resume=str(checkpoint)
    )
    assert_same_weights(resumed_model, model)
    assert resumed_lr == lr
    check_synced(resumed_model, resumed, tiny_gpt2(seed=1), GPT2_ROW_DIMS)


# --- accelerate -------------------------------------------------------------------------


def accelerate_train(seed, *, start=0, stop=TOTAL, save_to=None, load_from=None):
    """Trains a fresh tiny GPT-2 (weights from ``seed``) with accelerate's documented loop
    under ``Accelerator(cpu=True)``, with LaPerm(AdamW) and ``step_lr`` on it prepared
    with the model and data, from step ``start`` (after ``load_state(load_from)``,
    skipping the batches of the epoch already seen) to ``stop``; ``save_state(save_to)``
    at the end. Returns (model, the LaPerm, the lr of every step taken).

    The data is not shuffled and dropout is off. With dropout, resuming mid-epoch is not
    bit-identical, whatever the optimizer: ``load_state`` restores the global RNG, then
    ``iter()`` of the skipping loader draws a base seed from it (every DataLoader
    iterator does, even with no workers), where the uninterrupted run drew that seed at
    the start of the epoch; the dropout masks then differ."""
    accelerate = pytest.importorskip("accelerate")
    accelerator = accelerate.Accelerator(cpu=True)
    model = tiny_gpt2(seed, dropout=0.0)
    opt = gpt2_laperm(model)
    loader = torch.utils.data.DataLoader(TokenData(), batch_size=BATCH, shuffle=False)
    model, prepared_opt, loader, sched = accelerator.prepare(model, opt, loader, step_lr(opt))
    assert laperm_under(prepared_opt) is opt and prepared_opt is not opt
    if load_from is not None:
        accelerator.load_state(load_from)
    model.train()
    lrs, step = [], start
    while step < stop:
        seen = step % len(loader)
        for batch in accelerator.skip_first_batches(loader, seen) if seen else loader:
            lrs.append(sched.get_last_lr()[0])
            accelerator.backward(model(**batch).loss)
            prepared_opt.step()
            sched.step()
            prepared_opt.zero_grad()
            step += 1
            if step == stop:
                break
    assert opt.step_count == stop
    if save_to is not None:
        accelerator.save_state(save_to)
    return accelerator.unwrap_model(model), opt, lrs


def test_accelerate_resume_is_bit_identical(tmp_path):
    pytest.importorskip("accelerate")
    pytest.importorskip("transformers")
    model, opt, lrs = accelerate_train(seed=1)
    assert lrs == EXPECTED_LRS
    check_synced(model, opt, tiny_gpt2(seed=1), GPT2_ROW_DIMS)

    _, _, first_lrs = accelerate_train(seed=1, stop=N, save_to=tmp_path / "state")
    resumed_model, resumed, resumed_lrs = accelerate_train(
        seed=2, start=N, load_from=tmp_path / "state"
    )
    assert first_lrs + resumed_lrs == lrs
    assert_same_weights(resumed_model, model)
    check_synced(resumed_model, resumed, tiny_gpt2(seed=1), GPT2_ROW_DIMS)


# --- Lightning --------------------------------------------------------------------------


def tiny_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


CNN_ROW_DIMS = {"net.0.weight": 0, "net.3.weight": 0}  # as LitCNN names them

_lit_cnn = None


def lit_cnn_class():
    """The LightningModule class, made on first use (Lightning is optional)."""
    global _lit_cnn
    if _lit_cnn is None:
        pl = pytest.importorskip("lightning.pytorch")

        class LitCNN(pl.LightningModule):
            """tiny_cnn with LaPerm(Adam) and ``step_lr`` stepped every step; records
            the lr of every step it takes in ``lrs``."""

            def __init__(self, seed: int):
                super().__init__()
                self.net = tiny_cnn(seed)
                self.lrs = []

            def training_step(self, batch, batch_idx):
                self.lrs.append(self.optimizers().param_groups[0]["lr"])
                x, y = batch
                return F.cross_entropy(self.net(x), y)

            def configure_optimizers(self):
                opt = lk.LaPerm(torch.optim.Adam(lk.param_groups(self), lr=LR), sync_period=K)
                return {
                    "optimizer": opt,
                    "lr_scheduler": {"scheduler": step_lr(opt), "interval": "step"},
                }

        _lit_cnn = LitCNN
    return _lit_cnn


def image_loader():
    """3 batches an epoch, in a fixed order: step N ends an epoch. (Lightning resumes a
    plain DataLoader at an epoch boundary only, and warns otherwise.)"""
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randn(3 * BATCH, 1, 8, 8, generator=g),
        torch.randint(0, 10, (3 * BATCH,), generator=g),
    )
    return torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=False)


@pytest.fixture
def lightning_flags():
    """``Trainer(deterministic=True)`` sets process-wide flags: put them back."""
    flags = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    yield
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    torch.backends.cudnn.benchmark = flags[2]
    if flags[3] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = flags[3]


def lightning_fit(run_dir, seed, max_steps, ckpt_path=None):
    """Fits a fresh LitCNN (weights from ``seed``) to ``max_steps``, from ``ckpt_path`` if
    given, a ModelCheckpoint writing every N steps into run_dir / "ckpt".
    Returns (module, the LaPerm)."""
    pl = pytest.importorskip("lightning.pytorch")
    module = lit_cnn_class()(seed)
    checkpoints = pl.callbacks.ModelCheckpoint(
        dirpath=run_dir / "ckpt", filename="{step}", every_n_train_steps=N, save_top_k=-1
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=False,
        callbacks=[checkpoints],
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    trainer.fit(module, train_dataloaders=image_loader(), ckpt_path=ckpt_path)
    assert trainer.global_step == max_steps
    opt = trainer.optimizers[0]
    assert type(opt) is lk.LaPerm and laperm_under(module.optimizers()) is opt
    assert opt.step_count == max_steps
    return module, opt


# The restart writes its checkpoints beside the one it resumes from, as a rerun would.
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_lightning_resume_is_bit_identical(tmp_path, lightning_flags):
    pytest.importorskip("lightning.pytorch")
    module, opt = lightning_fit(tmp_path / "whole", seed=1, max_steps=TOTAL)
    assert module.lrs == EXPECTED_LRS
    check_synced(module, opt, lit_cnn_class()(seed=1), CNN_ROW_DIMS)

    first_module, _ = lightning_fit(tmp_path / "split", seed=1, max_steps=N)
    checkpoint = tmp_path / "split" / "ckpt" / f"step={N}.ckpt"
    saved = torch.load(checkpoint, weights_only=True)["optimizer_states"][0]
    assert {g["laperm_step"] for g in saved["param_groups"]} == {N}

    resumed_module, resumed = lightning_fit(
        tmp_path / "split", seed=2, max_steps=TOTAL, ckpt_path=checkpoint
    )
    assert first_module.lrs + resumed_module.lrs == module.lrs
    assert_same_weights(resumed_module, module)
    check_synced(resumed_module, resumed, lit_cnn_class()(seed=1), CNN_ROW_DIMS)
