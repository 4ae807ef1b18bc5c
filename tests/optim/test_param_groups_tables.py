"""``lk.param_groups``: per-token and per-position tables are not units. They are skipped,
or under ``embeddings="per_token"`` each token's vector is permuted on its own, whether
they are ``nn.Embedding`` weights or parameters held directly by a module (ViT's
``position_embeddings`` [1, N, D] and ``cls_token`` [1, 1, D]); tiny transformers ViT,
BERT and GPT-2 models built from configs."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import laperm_kernels as lk

pytestmark = pytest.mark.usefixtures("one_thread")


def rules(model, **kw):
    """{name: row_dim, or "skip"} by lk.param_groups."""
    groups = lk.param_groups(model, **kw)
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for g in groups:
        assert g.get("param_names", [names[id(p)] for p in g["params"]]) == [
            names[id(p)] for p in g["params"]
        ]
        for p in g["params"]:
            out[names[id(p)]] = "skip" if g.get("permute", True) is False else g["row_dim"]
    assert sorted(out) == sorted(names.values())
    return out


def transformers_model(kind: str):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "vit":
            return transformers.ViTModel(
                transformers.ViTConfig(
                    hidden_size=8,
                    num_hidden_layers=1,
                    num_attention_heads=2,
                    intermediate_size=8,
                    image_size=8,
                    patch_size=4,
                    num_channels=1,
                )
            )
        if kind == "bert":
            return transformers.BertModel(
                transformers.BertConfig(
                    vocab_size=20,
                    hidden_size=8,
                    num_hidden_layers=1,
                    num_attention_heads=2,
                    intermediate_size=8,
                    max_position_embeddings=16,
                )
            )
        return transformers.GPT2LMHeadModel(
            transformers.GPT2Config(vocab_size=20, n_positions=16, n_embd=8, n_layer=1, n_head=2)
        )


TABLES = {
    "vit": {"embeddings.cls_token", "embeddings.position_embeddings"},
    "bert": {
        "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight",
    },
    "gpt2": {"transformer.wte.weight", "transformer.wpe.weight"},
}


@pytest.mark.parametrize("kind", list(TABLES))
def test_tables_of_transformers_models_are_skipped_and_layers_permuted(kind):
    model = transformers_model(kind)
    rule = rules(model)
    assert {
        n for n, r in rule.items() if r == "skip" and model.get_parameter(n).dim() >= 2
    } == TABLES[kind]
    layers = {
        n: r
        for n, r in rule.items()
        if n.endswith("weight") and n not in TABLES[kind] and model.get_parameter(n).dim() >= 2
    }
    assert layers and set(layers.values()) == ({1} if kind == "gpt2" else {0}), layers
    per_token = rules(model, embeddings="per_token")
    for name in TABLES[kind]:  # each token's vector: the last dim, row_dim = ndim - 2
        assert per_token[name] == model.get_parameter(name).dim() - 2, name


def test_vit_tables_stay_in_place_and_per_token_keeps_each_position_its_own_values():
    transformers = pytest.importorskip("transformers")  # noqa: F841
    for embeddings, lr in (("skip", 1e-4), ("per_token", 5e-2)):
        model = transformers_model("vit")
        emb = model.embeddings
        init = {
            "pos": emb.position_embeddings.detach().clone(),
            "cls": emb.cls_token.detach().clone(),
        }
        opt = lk.LaPerm(
            torch.optim.Adam(lk.param_groups(model, embeddings=embeddings), lr=lr), sync_period=2
        )
        for t in range(4):
            x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(t))
            opt.zero_grad()
            model(pixel_values=x).last_hidden_state.square().mean().backward()
            opt.step()
        pos = emb.position_embeddings.detach()
        if embeddings == "skip":  # trained by Adam alone: every position near its init
            assert emb.position_embeddings not in opt.sorted_inits
            assert emb.cls_token not in opt.sorted_inits
            assert (pos - init["pos"]).abs().max() < 1e-3
        else:  # every position's vector: a permutation of its own
            assert torch.equal(pos[0].sort(dim=-1).values, init["pos"][0].sort(dim=-1).values)
            assert torch.equal(
                emb.cls_token.detach().sort(dim=-1).values, init["cls"].sort(dim=-1).values
            )
            assert not torch.equal(pos, init["pos"])


class Tables(nn.Module):
    """Free parameters of every kind the rule names, beside layers that stay units."""

    def __init__(self):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(6, 4))  # timm's name
        self.positional_embedding = nn.Parameter(torch.randn(6, 4))  # CLIP's
        self.relative_position_bias_table = nn.Parameter(torch.randn(9, 2))  # Swin's
        self.queries = nn.Parameter(torch.randn(1, 3, 4))  # [1, N, D], broadcast
        self.grid = nn.Parameter(torch.randn(1, 1, 3, 4))  # [1, 1, N, D]
        self.proj = nn.Parameter(torch.randn(5, 4))  # a plain matrix: a unit
        self.attn = nn.MultiheadAttention(4, 2, add_bias_kv=True)
        self.head = nn.Linear(4, 1)  # [1, 4]: one unit
        self.conv = nn.Conv2d(3, 1, 3)  # [1, 3, 3, 3]: one unit
        self.patch = PatchEmbeddings()


class PatchEmbeddings(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight_table = nn.Parameter(torch.randn(4, 4))  # on an *Embeddings module


def test_the_rule_for_parameters_held_directly_by_a_module():
    model = Tables()
    rule = rules(model)
    assert rule == {
        "pos_embed": "skip",
        "positional_embedding": "skip",
        "relative_position_bias_table": "skip",
        "queries": "skip",
        "grid": "skip",
        "proj": 0,
        "attn.in_proj_weight": 0,
        "attn.in_proj_bias": "skip",
        "attn.bias_k": "skip",
        "attn.bias_v": "skip",
        "attn.out_proj.weight": 0,
        "attn.out_proj.bias": "skip",
        "head.weight": 0,
        "head.bias": "skip",
        "conv.weight": 0,
        "conv.bias": "skip",
        "patch.weight_table": "skip",
    }
    per_token = rules(model, embeddings="per_token")
    assert {n: per_token[n] for n in ("pos_embed", "queries", "grid", "attn.bias_k")} == {
        "pos_embed": 0,
        "queries": 1,
        "grid": 2,
        "attn.bias_k": 1,
    }
    groups = lk.param_groups(model, embeddings="per_token")
    assert [g.get("row_dim", "skip") for g in groups] == [0, 1, 2, "skip"]
