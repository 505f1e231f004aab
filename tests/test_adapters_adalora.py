"""Reference AdaLoRA: allocator, budget schedule and orthogonality penalty against peft and AdaLoRA's equations.

The training comparison runs both backends for a whole schedule (warm-up, cubic budgeting with masking
every deltaT steps, final phase) on a tiny float64 LLaMA with grouped-query attention, and requires the
same masks and the same singular values at every step. Differences come only from float64 rounding
(rtol 1e-8 after 12 optimizer steps); a masking decision that differed would change a Lambda entry
from non-zero to zero and fail the test outright.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from blockrank_ref.adalora import RankAllocator, SVDLinear, orthogonality_penalty

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROFILE = settings(max_examples=50 if os.environ.get("HYPOTHESIS_PROFILE") == "dev" else 12,
                   derandomize=os.environ.get("HYPOTHESIS_PROFILE") != "dev", deadline=None)

peft = pytest.importorskip("peft")

from experiments.targeting import (  # noqa: E402
    adapter_modules,
    apply_block_adapters,
    copy_adapter_parameters,
    orthogonality_regularizer,
)

SCHEDULE = {"init_r": 3, "total_step": 12, "tinit": 2, "tfinal": 3, "deltaT": 2, "orth_reg_weight": 0.5}


def _tiny_llama():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                      intermediate_size=64, num_hidden_layers=2, vocab_size=64)
    return transformers.LlamaForCausalLM(config).double()


def _pair():
    pytest.importorskip("peft")

    base = _tiny_llama()
    peft_model, _ = apply_block_adapters(copy.deepcopy(base), method="adalora", blocks="QKVO", rank=1,
                                         alpha=2.0, backend="peft", **SCHEDULE)
    ref_model, _ = apply_block_adapters(copy.deepcopy(base), method="adalora", blocks="QKVO", rank=1,
                                        alpha=2.0, backend="reference", **SCHEDULE)
    copy_adapter_parameters(peft_model, ref_model)
    return peft_model, ref_model, adapter_modules(peft_model), adapter_modules(ref_model)


def test_allocator_and_training_match_peft():
    """A full AdaLoRA schedule gives the same masks and singular values as peft's update_and_allocate."""
    peft_model, ref_model, peft_layers, ref_layers = _pair()
    allocator = RankAllocator(ref_layers, target_r=1, total_step=SCHEDULE["total_step"], tinit=SCHEDULE["tinit"],
                              tfinal=SCHEDULE["tfinal"], deltaT=SCHEDULE["deltaT"])
    trainable = lambda model: [p for p in model.parameters() if p.requires_grad]  # noqa: E731
    peft_opt = torch.optim.SGD(trainable(peft_model), lr=0.5)
    ref_opt = torch.optim.SGD(trainable(ref_model), lr=0.5)
    generator = torch.Generator().manual_seed(3)
    masked_steps = 0
    for t in range(SCHEDULE["total_step"]):
        ids = torch.randint(0, 64, (2, 6), generator=generator)
        # Callers add orth_reg_weight * R for both backends (a task-less PeftModel does not add it).
        peft_loss = (peft_model(input_ids=ids, labels=ids).loss
                     + SCHEDULE["orth_reg_weight"] * orthogonality_regularizer(peft_model))
        ref_loss = (ref_model(input_ids=ids, labels=ids).loss
                    + SCHEDULE["orth_reg_weight"] * orthogonality_penalty(ref_layers.values()))
        torch.testing.assert_close(ref_loss, peft_loss, rtol=1e-8, atol=0, msg=f"loss at step {t}")
        for model, loss, optimizer in ((peft_model, peft_loss, peft_opt), (ref_model, ref_loss, ref_opt)):
            loss.backward()
            optimizer.step()
        peft_model.base_model.update_and_allocate(t)
        keep = allocator.step(t)
        peft_opt.zero_grad()
        ref_opt.zero_grad()

        for name, layer in ref_layers.items():
            peft_E = peft_layers[name].lora_E["default"]
            assert torch.equal(layer.Lambda == 0, peft_E == 0), f"mask of {name} differs from peft at step {t}"
            torch.testing.assert_close(layer.Lambda, peft_E, rtol=1e-8, atol=1e-12)
        if keep is not None:
            masked_steps += 1
            kept = sum(layer.kept_rank() for layer in ref_layers.values())
            assert kept <= allocator.budget(t)[0] or t >= SCHEDULE["total_step"] - SCHEDULE["tfinal"]
    assert masked_steps >= 4, "the schedule never reached its masking steps"
    final = sum(layer.kept_rank() for layer in ref_layers.values())
    assert final <= allocator.target_budget


def test_budget_schedule_matches_peft():
    """Cubic schedule: the budget at every step equals peft's, from init_r * n down to target_r * n."""
    peft_model, _, _, ref_layers = _pair()
    peft_allocator = peft_model.base_model.rankallocator
    allocator = RankAllocator(ref_layers, target_r=1, total_step=SCHEDULE["total_step"], tinit=SCHEDULE["tinit"],
                              tfinal=SCHEDULE["tfinal"], deltaT=SCHEDULE["deltaT"])
    assert allocator.init_budget == peft_allocator.init_bgt == 3 * 8
    assert allocator.target_budget == peft_allocator.target_bgt == 1 * 8
    budgets = []
    for t in range(SCHEDULE["total_step"] + 2):
        assert allocator.budget(t) == peft_allocator.budget_schedule(t), f"step {t}"
        budgets.append(allocator.budget(t)[0])
    assert budgets == sorted(budgets, reverse=True), "budget must never grow"


def test_regularizer_equals_peft_causal_lm_term():
    """peft's PeftModelForCausalLM adds exactly orth_reg_weight * R to `.loss`, with our R."""
    base = _tiny_llama()
    config = peft.AdaLoraConfig(target_r=1, init_r=3, total_step=12, orth_reg_weight=0.5, task_type="CAUSAL_LM",
                                target_modules=["q_proj", "o_proj"], init_lora_weights=False)
    model = peft.get_peft_model(base, config)
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    with_term = model(input_ids=ids, labels=ids).loss
    without_term = model.get_base_model()(input_ids=ids, labels=ids).loss
    # transformers computes the causal-LM loss in float32 even for a float64 model, and peft adds the
    # term in place, so the difference carries float32 rounding of a loss of order 4 (about 5e-7).
    expected = 0.5 * orthogonality_regularizer(model)
    assert expected.item() > 0.1, "random P and Q must be far from orthonormal for this check to bite"
    torch.testing.assert_close((with_term - without_term).double(), expected.detach(), rtol=0, atol=2e-6)


def test_orthogonality_penalty_matches_definition():
    """R averages ||Q Q^T - I||_F and ||P^T P - I||_F over all 2n matrices; it is 0 for orthonormal P, Q."""
    torch.manual_seed(0)
    layers = [SVDLinear(nn.Linear(6, 5).double(), 3, 1.0, zero_init=False) for _ in range(2)]
    expected = torch.stack([torch.linalg.matrix_norm(t - torch.eye(3, dtype=torch.float64))
                            for layer in layers for t in (layer.Q @ layer.Q.T, layer.P.T @ layer.P)]).mean()
    torch.testing.assert_close(orthogonality_penalty(layers), expected)
    with torch.no_grad():
        for layer in layers:
            layer.P.copy_(torch.linalg.qr(layer.P)[0])
            layer.Q.copy_(torch.linalg.qr(layer.Q.T)[0].T)
    assert orthogonality_penalty(layers).item() < 1e-12


@PROFILE
@given(st.lists(st.integers(2, 5), min_size=1, max_size=4), st.integers(1, 2), st.integers(0, 3),
       st.integers(0, 3), st.integers(1, 3), st.integers(0, 2**16))
def test_never_keeps_more_than_budget(init_ranks, target_r, tinit, tfinal, deltaT, seed):
    """After every masking step the kept rank is at most the current budget; after the schedule, target_r * n.

    Gradients are random, so importance scores (and ties) vary; ties can only mask more, never fewer.
    """
    total_step = tinit + tfinal + 6
    torch.manual_seed(seed)
    layers = {f"layer{i}": SVDLinear(nn.Linear(4, 3), r, 1.0, zero_init=False) for i, r in enumerate(init_ranks)}
    allocator = RankAllocator(layers, target_r=target_r, total_step=total_step, tinit=tinit, tfinal=tfinal,
                              deltaT=deltaT)
    for t in range(total_step + 2):
        for layer in layers.values():
            for weight in (layer.P, layer.Lambda, layer.Q):
                weight.grad = torch.randn_like(weight)
        keep = allocator.step(t)
        kept = sum(layer.kept_rank() for layer in layers.values())
        if keep is not None:
            limit = allocator.target_budget if t >= total_step - tfinal else allocator.budget(t)[0]
            assert kept <= limit, f"step {t}: kept {kept} > budget {limit}"
    assert sum(layer.kept_rank() for layer in layers.values()) <= allocator.target_budget


def test_rejects_schedule_without_budgeting_phase():
    layers = {"a": SVDLinear(nn.Linear(4, 3), 2, 1.0)}
    with pytest.raises(ValueError, match="tinit=5 must be smaller"):
        RankAllocator(layers, target_r=1, total_step=8, tinit=5, tfinal=3)
    with pytest.raises(ValueError, match="total_step must be a positive"):
        RankAllocator(layers, target_r=1, total_step=0)


def test_step_without_gradients_raises():
    layers = {"a": SVDLinear(nn.Linear(4, 3), 2, 1.0)}
    allocator = RankAllocator(layers, target_r=1, total_step=5)
    with pytest.raises(ValueError, match="has no gradient"):
        allocator.step(0)
