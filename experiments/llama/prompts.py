"""Alpaca-style prompts of the DoRA commonsense protocol, tokenization and batch collation.

The templates are byte-exact copies of the strings built by NVlabs/DoRA
``commonsense_reasoning/finetune.py::generate_prompt`` (training) and
``commonsense_evaluate.py::generate_prompt`` (evaluation). In both, the lines after the preamble
are indented by 16 spaces, but they differ in whitespace elsewhere:
- training: the preamble ends with two spaces, blank lines contain 16 spaces, and the output
  follows the response marker;
- evaluation: the preamble ends with one space, blank lines are empty, and the prompt ends with
  the marker, a newline and 16 spaces.
The reference numbers measure a model trained on one and scored on the other, so both are kept.

Loss modes:
- ``"label"`` (the default of "LoRA in the right place", which trains the model to predict the
  label instead of the whole text): the loss covers only the response, "the correct answer is
  <answer>", and the end-of-sequence token. Prompt tokens get label -100, counted as in the
  reference's ``train_on_inputs=False`` branch (the length of the tokenized prompt without output).
- ``"answer_only"``: the other reading of "predict the label directly". The response is the bare
  answer ("true", "solution2", ...) in place of the sentence, and the loss covers it and EOS. The
  evaluation pattern finds the answer either way.
- ``"whole"`` (the DoRA scripts, ``train_on_inputs=True``): the loss covers every token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

INDENT = " " * 16
RESPONSE_MARKER = "### Response:"
IGNORE_INDEX = -100
LOSS_MODES = ("label", "answer_only", "whole")

_PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
_PREAMBLE_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request."
)


def training_prompt(record: dict[str, Any], output: str | None = None) -> str:
    """Build the training text of one record; `output` overrides the record's (pass "" for the prompt alone)."""
    output = record["output"] if output is None else output
    instruction = record["instruction"]
    if record.get("input"):
        return (
            f"{_PREAMBLE_WITH_INPUT} \n\n"
            f"{INDENT}### Instruction:\n{INDENT}{instruction}\n{INDENT}\n"
            f"{INDENT}### Input:\n{INDENT}{record['input']}\n{INDENT}\n"
            f"{INDENT}{RESPONSE_MARKER}\n{INDENT}{output}"
        )
    return (
        f"{_PREAMBLE}  \n\n"
        f"{INDENT}### Instruction:\n{INDENT}{instruction}\n{INDENT}\n"
        f"{INDENT}{RESPONSE_MARKER}\n{INDENT}{output}"
    )


def evaluation_prompt(record: dict[str, Any]) -> str:
    """Build the generation prompt of one test record (ends with the response marker and indent)."""
    instruction = record["instruction"]
    if record.get("input"):
        return (
            f"{_PREAMBLE_WITH_INPUT}\n\n"
            f"{INDENT}### Instruction:\n{INDENT}{instruction}\n\n"
            f"{INDENT}### Input:\n{INDENT}{record['input']}\n\n"
            f"{INDENT}{RESPONSE_MARKER}\n{INDENT}"
        )
    return (
        f"{_PREAMBLE} \n\n"
        f"{INDENT}### Instruction:\n{INDENT}{instruction}\n\n"
        f"{INDENT}{RESPONSE_MARKER}\n{INDENT}"
    )


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]

    @property
    def label_count(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def tokenize_training_example(tokenizer, record: dict[str, Any], *, loss_mode: str,
                              cutoff_len: int) -> TokenizedExample:
    """Tokenize one training record as the reference does: truncate to `cutoff_len`, then append EOS if room.

    In "label" and "answer_only" modes the first len(tokenize(prompt without output)) labels are
    masked with -100.
    """
    if loss_mode not in LOSS_MODES:
        raise ValueError(f"invalid loss_mode {loss_mode!r}: choose one of {LOSS_MODES}")
    if cutoff_len < 2:
        raise ValueError(f"cutoff_len must be at least 2 tokens, got {cutoff_len}")

    output = record["answer"] if loss_mode == "answer_only" else record["output"]
    input_ids = _tokenize(tokenizer, training_prompt(record, output=output), cutoff_len)
    eos = tokenizer.eos_token_id
    if input_ids[-1] != eos and len(input_ids) < cutoff_len:
        input_ids.append(eos)
    labels = list(input_ids)

    if loss_mode != "whole":
        prompt_length = len(_tokenize(tokenizer, training_prompt(record, output=""), cutoff_len))
        labels[:prompt_length] = [IGNORE_INDEX] * min(prompt_length, len(labels))
    return TokenizedExample(input_ids=input_ids, labels=labels)


def _tokenize(tokenizer, text: str, cutoff_len: int) -> list[int]:
    encoded = tokenizer(text, truncation=True, max_length=cutoff_len, padding=False, return_tensors=None)
    return list(encoded["input_ids"])


def collate(examples: Sequence[TokenizedExample], pad_token_id: int,
            pad_to_multiple_of: int = 8) -> dict[str, torch.Tensor]:
    """Left-pad a batch as `DataCollatorForSeq2Seq(pad_to_multiple_of=8)` with `padding_side="left"` does.

    Padded positions get attention mask 0 and label -100, so the pad token id never enters the
    loss (it matters for LLaMA-3, whose id 0 is the real token "!"). The first token of each row
    also gets label -100, because nothing precedes it in an unpadded row. The reference collator
    keeps that label in "whole" mode, so there the last pad position learns to predict it and the
    loss depends on how much a row was padded.
    """
    if not examples:
        raise ValueError("cannot collate an empty batch")
    longest = max(len(example.input_ids) for example in examples)
    length = -(-longest // pad_to_multiple_of) * pad_to_multiple_of

    input_ids = torch.full((len(examples), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, example in enumerate(examples):
        size = len(example.input_ids)
        input_ids[row, length - size:] = torch.tensor(example.input_ids)
        labels[row, length - size:] = torch.tensor(example.labels)
        labels[row, length - size] = IGNORE_INDEX
        attention_mask[row, length - size:] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
