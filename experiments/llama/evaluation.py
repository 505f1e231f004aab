"""Answer generation on the eight test sets, sharded over processes, scored per test set.

Decoding follows the reference: beam search with `num_beams` beams and sampling off (4 and False
by default, so the temperature, top-p and top-k of the reference script are inert), at most
`max_new_tokens` new tokens. Each generation is decoded as prompt tokens followed by the new
tokens up to the first end-of-sequence token, without special tokens, and the answer is read by
`answers.extract_answer`. Cutting at EOS drops the pad tokens that generate() appends to finished
rows of a batch, which with LLaMA-3's pad id 0 ("!") would otherwise be decoded as text.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from experiments.llama.answers import TaskScore, extract_answer, response_text, summarize
from experiments.llama.configs import RunConfig
from experiments.llama.data import read_test_set
from experiments.llama.distributed import DistContext
from experiments.llama.prompts import evaluation_prompt

logger = logging.getLogger(__name__)

SAMPLES_PER_TEST_SET = 5  # generations kept in the result file, so a format collapse can be read


def generation_kwargs(config: RunConfig, tokenizer) -> dict[str, Any]:
    kwargs = {"num_beams": config.num_beams, "do_sample": config.do_sample,
              "max_new_tokens": config.max_new_tokens, "pad_token_id": tokenizer.pad_token_id,
              "eos_token_id": tokenizer.eos_token_id}
    if config.do_sample:
        # The reference script's values, active only when sampling.
        kwargs.update(temperature=0.1, top_p=0.75, top_k=40)
    return kwargs


def _decode(tokenizer, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, new_ids: torch.Tensor) -> str:
    prompt = prompt_ids[prompt_mask.bool()].tolist()
    generated = new_ids.tolist()
    if tokenizer.eos_token_id in generated:
        generated = generated[:generated.index(tokenizer.eos_token_id) + 1]
    return tokenizer.decode(prompt + generated, skip_special_tokens=True)


@torch.no_grad()
def generate_batch(model, tokenizer, records: list[dict[str, Any]], config: RunConfig,
                   device: torch.device) -> list[str]:
    """Return the decoded prompt + generation of each record."""
    encoded = tokenizer([evaluation_prompt(record) for record in records], return_tensors="pt", padding=True)
    input_ids = encoded["input_ids"].to(device)
    attention_mask = encoded["attention_mask"].to(device)
    output = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                            **generation_kwargs(config, tokenizer))
    new_tokens = output[:, input_ids.shape[1]:]
    return [_decode(tokenizer, input_ids[row].cpu(), attention_mask[row].cpu(), new_tokens[row].cpu())
            for row in range(len(records))]


def _read_finished(path: Path | None) -> dict[str, dict[str, Any]]:
    if path is None or not path.exists():
        return {}
    return json.loads(path.read_text())


def _write_finished(path: Path, finished: dict[str, dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(handle, "w") as stream:
        json.dump(finished, stream)
    os.replace(temporary, path)


def evaluate(model, tokenizer, config: RunConfig, data_dir: Path, context: DistContext,
             progress: Callable[[str], None] = logger.info,
             finished_path: Path | None = None) -> tuple[dict[str, Any], dict[str, list]]:
    """Generate and score every configured test set; return (metrics, kept sample generations).

    Process k takes examples k, k + W, k + 2W, ...; the counts are summed over processes. With
    `finished_path`, each scored test set is recorded there and skipped when the evaluation restarts.
    """
    if tokenizer.padding_side != "left":
        raise ValueError("the tokenizer must pad on the left for batched generation (padding_side='left')")
    model.eval()
    scores, samples = {}, {}
    finished = _read_finished(finished_path)
    for name in config.test_sets:
        if name in finished:
            saved = finished[name]
            scores[name] = TaskScore(saved["total"], saved["correct"], saved["unparsable"], saved["examples"])
            samples[name] = saved["examples"]
            progress(f"{name}: scored before the restart, {saved['correct']} of {saved['total']} correct")
            continue
        records = read_test_set(data_dir, name, limit=config.test_limit)
        mine = records[context.rank::context.world_size]
        score = TaskScore()
        starts = range(0, len(mine), config.eval_batch_size)
        for start in tqdm(starts, desc=name, unit="batch", disable=None if context.is_main else True):
            batch = mine[start:start + config.eval_batch_size]
            for record, decoded in zip(batch, generate_batch(model, tokenizer, batch, config, context.device)):
                prediction = extract_answer(name, decoded)
                keep = len(score.examples) < SAMPLES_PER_TEST_SET
                score.add(prediction, record["answer"], keep, response_text(decoded))

        counts = torch.tensor([score.total, score.correct, score.unparsable], dtype=torch.float64,
                              device=context.device)
        context.all_reduce_sum(counts)
        score.total, score.correct, score.unparsable = (int(value) for value in counts.tolist())
        scores[name], samples[name] = score, score.examples
        if finished_path is not None and context.is_main:
            finished[name] = {"total": score.total, "correct": score.correct, "unparsable": score.unparsable,
                              "examples": score.examples}
            _write_finished(finished_path, finished)
        progress(f"{name}: accuracy {100 * score.accuracy:.2f}% on {score.total} examples, "
                 f"{score.unparsable} without a parsable answer")
    return summarize(scores), samples
