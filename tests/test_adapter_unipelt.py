"""Our bottleneck adapters and UniPELT on tiny BERT, Llama, Qwen2 and Gemma3 (built from configs).

- at initialisation the adapted model equals the base model (zero up-projection, zero LoRA B);
- trainable parameter counts equal the closed-form counts;
- UniPELT with every gate fixed to 1 (unipelt_gated=False) equals the *sum of its parts*, meaning:
  each part adds its own update to the same base activations — q = W_q x + (α/r) B_q A_q x,
  v likewise, FFN out h + U f(D h), attention over [P_K; K], [P_V; V] — so (a) LoRA-only UniPELT
  equals peft's LoRA with the same A, B, and (b) adapter-only UniPELT equals our `adapter` method
  (Pfeiffer placement) with the same D, U, and (c) with all three on, each wrapped projection's
  output is exactly base output + that part's update.
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from lmadapt.methods.adapter.model import add_adapters, block_sites
from lmadapt.methods.unipelt.config import UnipeltMethodConfig
from lmadapt.methods.unipelt.model import add_unipelt
from lmadapt.models.load import count_params

SMALL = {"vocab_size": 40, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "max_position_embeddings": 64}


def _models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "bert": BertForSequenceClassification(BertConfig(**SMALL, num_labels=2)),
        "llama": LlamaForCausalLM(LlamaConfig(**SMALL, num_key_value_heads=2)),
        "qwen2": Qwen2ForCausalLM(Qwen2Config(**SMALL, num_key_value_heads=2)),
        "gemma3": Gemma3ForCausalLM(Gemma3TextConfig(**SMALL, num_key_value_heads=2, head_dim=8,
                                                     sliding_window=4)),
    }


MODELS = _models()
IDS = torch.tensor([[3, 7, 9, 11, 13, 2], [3, 5, 8, 0, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])


def _out(model: torch.nn.Module) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=MASK).logits


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    model = copy.deepcopy(model)
    model.requires_grad_(False)
    return model


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer"])
def test_adapter_init_is_identity_and_count_is_closed_form(arch, placement):
    model = _frozen(MODELS[arch])
    add_adapters(model, placement, reduction=4, act="relu")
    torch.testing.assert_close(_out(model), _out(MODELS[arch]), rtol=0, atol=0)
    d, m, layers = 32, 8, 2
    per_adapter = d * m + m + m * d + d
    assert count_params(model)[0] == layers * (2 if placement == "houlsby" else 1) * per_adapter


def test_sites_found_by_structure():
    names = {arch: block_sites(model)[0] for arch, model in MODELS.items()}
    assert names["bert"].attention_out.endswith("attention.output.dense")
    assert names["bert"].ffn_out.endswith("layer.0.output.dense")
    assert names["bert"].attention.endswith("attention.self")
    for arch in ("llama", "qwen2", "gemma3"):
        assert names[arch].attention_out.endswith("self_attn.o_proj")
        assert names[arch].ffn_out.endswith("mlp.down_proj")


@pytest.mark.parametrize("arch", list(MODELS))
def test_unipelt_init_and_counts(arch):
    """LoRA (B=0) and adapter (U=0) parts start as identities; the prefix does not (it takes
    attention mass from step 0, as in prefix tuning), so it is checked only for its count."""
    cfg = UnipeltMethodConfig(unipelt_prefix=False, unipelt_lora_r=2, unipelt_adapter_reduction=4)
    model = _frozen(MODELS[arch])
    add_unipelt(model, cfg)
    torch.testing.assert_close(_out(model), _out(MODELS[arch]), rtol=0, atol=0)
    d, r, m, layers = 32, 2, 8, 2
    q_out, v_out = 32, (32 if arch == "bert" else 16)  # GQA: 2 kv heads x head_dim 8
    lora = r * (d + q_out) + r * (d + v_out) + (d + 1)  # A, B for q and v + one gate
    adapter = d * m + m + m * d + d + (d + 1)  # D, U + gate
    assert count_params(model)[0] == layers * (lora + adapter)
    full = _frozen(MODELS[arch])
    add_unipelt(full, UnipeltMethodConfig(unipelt_prefix_tokens=3, unipelt_lora_r=2, unipelt_adapter_reduction=4))
    heads_kv, head_dim = (4, 8) if arch == "bert" else (2, 8)
    prefix = 2 * heads_kv * 3 * head_dim + (d + 1)
    assert count_params(full)[0] == layers * (lora + adapter + prefix)
    assert torch.isfinite(_out(full)).all()


def _randomize(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(hash(name) % 1000))


def test_ungated_lora_equals_peft_lora():
    base = MODELS["llama"]
    ours = _frozen(base)
    add_unipelt(ours, UnipeltMethodConfig(unipelt_prefix=False, unipelt_adapter=False, unipelt_gated=False,
                                          unipelt_lora_r=2, unipelt_lora_alpha=4))
    _randomize(ours)
    theirs = get_peft_model(_frozen(base), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, module in ours.named_modules():
            if hasattr(module, "lora_A"):
                peft_layer = theirs.base_model.model.get_submodule(name)
                peft_layer.lora_A["default"].weight.copy_(module.lora_A)
                peft_layer.lora_B["default"].weight.copy_(module.lora_B)
    torch.testing.assert_close(_out(ours), _out(theirs), rtol=1e-5, atol=1e-5)


def test_ungated_adapter_equals_adapter_method():
    base = MODELS["bert"]
    ours = _frozen(base)
    add_unipelt(ours, UnipeltMethodConfig(unipelt_prefix=False, unipelt_lora=False, unipelt_gated=False,
                                          unipelt_adapter_reduction=4))
    _randomize(ours)
    plain = _frozen(base)
    add_adapters(plain, "pfeiffer", reduction=4, act="relu")
    plain.load_state_dict(ours.state_dict())  # same names: <ffn_out>.base / <ffn_out>.adapter.{down,up}
    torch.testing.assert_close(_out(ours), _out(plain), rtol=1e-6, atol=1e-6)


def test_ungated_parts_add_to_base_activations():
    model = _frozen(MODELS["llama"])
    add_unipelt(model, UnipeltMethodConfig(unipelt_gated=False, unipelt_lora_r=2, unipelt_adapter_reduction=4))
    _randomize(model)
    layer = model.model.layers[0]
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        q = layer.self_attn.q_proj
        expected_q = q.base(x) + (x @ q.lora_A.T) @ q.lora_B.T * q.scaling
        torch.testing.assert_close(q(x), expected_q)
        ffn = layer.mlp.down_proj
        h = ffn.base(torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(1)))
        torch.testing.assert_close(ffn.adapter(h) + h, h + ffn.adapter.up(ffn.adapter.act(ffn.adapter.down(h))))
    # the prefix changes the output, and gradients reach every part
    out = model(input_ids=IDS, attention_mask=MASK).logits
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_prefix_batch_invariance():
    """With the prefix on, a row's outputs do not depend on the other rows' padding."""
    model = _frozen(MODELS["llama"])
    add_unipelt(model, UnipeltMethodConfig(unipelt_prefix_tokens=3))
    _randomize(model)
    model.eval()
    with torch.no_grad():
        both = model(input_ids=IDS, attention_mask=MASK).logits
        alone = model(input_ids=IDS[:1], attention_mask=MASK[:1]).logits
    torch.testing.assert_close(both[0], alone[0], rtol=1e-4, atol=1e-4)
