"""Cost of the LLaMA runner's protocol choices, measured side by side on a small random LLaMA.

Two ratios matter when planning a paper-scale run:
- evaluation: the reference decodes one prompt at a time with 4 beams; `--eval-batch-size 8`
  left-pads 8 prompts per generate() call, and greedy decoding is shown for scale;
- training: a batch of 16 in one forward pass against 4 accumulated micro-batches of 4
  (`--micro-batch-size 4`), which gives the same loss with less activation memory.

The model here is a random 4-layer LLaMA (hidden 256, 8 query and 2 key/value heads) on the CPU, so
the absolute times say nothing about a 7B model on a GPU. Only the ratios carry over, and only
roughly, because a GPU gains more from batching than a CPU does.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch

PROMPT_LENGTH = 150
NEW_TOKENS = 32
PROMPTS = 8


def _model():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=2000, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def _seconds(function, repeats: int = 1) -> float:
    function()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def _generation_times(model) -> dict[str, float]:
    prompts = torch.randint(3, 2000, (PROMPTS, PROMPT_LENGTH))
    # min_new_tokens keeps every call at the full length, as a random model might stop anywhere.
    common = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)

    def one_at_a_time(num_beams: int):
        def run():
            for row in prompts:
                model.generate(input_ids=row[None], attention_mask=torch.ones_like(row[None]),
                               num_beams=num_beams, **common)
        return run

    def batched():
        model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), num_beams=4, **common)

    with torch.no_grad():
        return {"4 beams, batch 1 (reference)": _seconds(one_at_a_time(4)) / PROMPTS,
                "4 beams, batch 8": _seconds(batched) / PROMPTS,
                "greedy, batch 1": _seconds(one_at_a_time(1)) / PROMPTS}


def _training_times(model) -> dict[str, float]:
    from experiments.llama.configs import RunConfig
    from experiments.llama.distributed import init_distributed
    from experiments.llama.prompts import TokenizedExample
    from experiments.llama.training import Trainer

    model.train()
    for name, parameter in model.named_parameters():
        parameter.requires_grad_("o_proj" in name or "v_proj" in name)
    examples = [TokenizedExample(ids, ids) for ids in torch.randint(3, 2000, (16, PROMPT_LENGTH)).tolist()]
    tokenizer = SimpleNamespace(pad_token_id=0)
    context = init_distributed("cpu")
    times = {}
    for micro in (16, 4):
        config = RunConfig(experiment="bench", model="bench", blocks="OV", rank=1, learning_rate=1e-4,
                           dtype="float32", micro_batch_size=micro)
        trainer = Trainer(model, tokenizer, config, context, dict)
        times[f"batch 16, micro-batch {micro}"] = _seconds(lambda: trainer._train_step(examples), repeats=2)
    return times


def main() -> int:
    model = _model()
    generation = _generation_times(model)
    reference = generation["4 beams, batch 1 (reference)"]
    print(f"evaluation, per prompt ({PROMPT_LENGTH} prompt tokens, {NEW_TOKENS} new tokens):")
    for label, seconds in generation.items():
        print(f"  {label:30s} {1000 * seconds:8.1f} ms   {reference / seconds:5.2f}x the reference speed")

    training = _training_times(model)
    whole = training["batch 16, micro-batch 16"]
    print("training step (full fine-tuning of v_proj and o_proj, batch of 16):")
    for label, seconds in training.items():
        print(f"  {label:30s} {1000 * seconds:8.1f} ms   {seconds / whole:5.2f}x the time of one pass")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
