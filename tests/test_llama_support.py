"""Shared builders for the LLaMA tests: tiny commonsense files, a tiny tokenizer and a tiny LLaMA.

The data files follow the LLM-Adapters format field by field, with instructions written like the
real ones ("... Answer format: true/false"), so the real readers, prompts and answer patterns run.
The tokenizer is a byte-level BPE trained here on that text. It round-trips bytes exactly, which
the split at "### Response:" needs. The model is a random 2-layer LLaMA with grouped-query attention.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from experiments.llama.data import TEST_SETS
from experiments.llama.prompts import evaluation_prompt, training_prompt

WORDS = ("cat dog tree river stone cloud apple bread music light water fire paper glass house road "
         "window garden chair table").split()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Run torch on one thread while a module's tests run.

    The tiny model's matrices are too small to gain from two threads, and on a loaded machine two
    spinning threads made one forward pass about 40 times slower (1.5 s instead of 0.03 s).
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _sentence(rng: random.Random, length: int = 4) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(length))


def make_record(test_set_name: str, rng: random.Random) -> dict[str, str]:
    """Return one record in the LLM-Adapters format for `test_set_name`, with a random gold label."""
    test_set = next(t for t in TEST_SETS if t.name == test_set_name)
    # SIQA has 3 choices and ARC/OBQA 4 in the real data, although the pattern accepts answer5.
    count = {"social_i_qa": 3, "ARC-Easy": 4, "ARC-Challenge": 4, "openbookqa": 4}.get(
        test_set_name, len(test_set.labels))
    labels = test_set.labels[:count]
    answer = rng.choice(labels)
    if test_set_name == "boolq":
        instruction = (f"Please answer the following question with true or false, question: "
                       f"is the {_sentence(rng, 2)} {_sentence(rng, 2)}?\n\nAnswer format: true/false")
    else:
        options = "\n\n".join(f"{label[0].upper()}{label[1:]}: {_sentence(rng)}" for label in labels)
        instruction = (f"Please choose the correct answer to the question: {_sentence(rng, 6)}?\n\n"
                       f"{options}\n\nAnswer format: {'/'.join(labels)}")
    return {"instruction": instruction, "input": "", "output": f"the correct answer is {answer}",
            "answer": answer}


def write_commonsense(data_dir: Path, train_size: int = 48, test_size: int = 4, seed: int = 0,
                      flat: bool = False) -> Path:
    """Write commonsense_170k.json and dataset/<name>/test.json for all eight test sets."""
    rng = random.Random(seed)
    names = [test_set.name for test_set in TEST_SETS]
    train = [make_record(names[i % len(names)], rng) for i in range(train_size)]
    train_path = data_dir / ("commonsense_170k.json" if flat else "ft-training_set/commonsense_170k.json")
    train_path.parent.mkdir(parents=True, exist_ok=True)
    train_path.write_text(json.dumps(train, indent=1))
    for name in names:
        path = data_dir / "dataset" / name / "test.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([make_record(name, rng) for _ in range(test_size)], indent=1))
    return data_dir


def make_tokenizer(vocab_size: int = 400):
    """Train a byte-level BPE tokenizer on prompt text and wrap it like a LLaMA tokenizer (BOS added)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(1)
    corpus = []
    for test_set in TEST_SETS:
        for _ in range(10):
            record = make_record(test_set.name, rng)
            corpus += [training_prompt(record), evaluation_prompt(record)]

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                             special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def make_model_dir(model_dir: Path, seed: int = 0) -> Path:
    """Save a random 2-layer LLaMA (4 query heads, 2 key/value heads) and its tokenizer to `model_dir`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir
