"""Run configurations of the LLaMA experiments and the reference protocol they follow.

One `RunConfig` is one fine-tuning run plus its evaluation. Its dict form (`as_dict`) is what the
result file stores and hashes, so two tables that need the same run (table 3's QV rank 1 and
figure 2's V+Q curve) share one result file. Block strings are stored in Q, K, V, O order.

Sources of the defaults (NVlabs/DoRA ``commonsense_reasoning``, read from its public repository):
- learning rate 2e-4 (LLaMA2-7B) / 1e-4 (LLaMA3-8B), AdamW, weight decay 0.1, linear decay to zero:
  appendix D (table 6) of "LoRA in the right place". The weight decay differs from DoRA's 0.
- 100 warm-up steps, betas (0.9, 0.999), eps 1e-8, gradient clipping at norm 1.0: the defaults of
  the Hugging Face Trainer that ``finetune.py`` uses with ``warmup_steps=100``.
- batch 16 with no accumulation, 3 epochs, cutoff 256 tokens, 120 validation examples split with
  seed 42, validation every 80 steps, best validation loss kept: ``llama2_7B_DoRA.sh``,
  ``llama3_8B_DoRA.sh`` and ``finetune.py``.
- LoRA dropout 0.05: the ``finetune.py`` default; alpha = 2 r: the README's ``sh ... 32 64``.
- 4-beam search without sampling, at most 32 new tokens, evaluation batch 1:
  ``commonsense_evaluate.py`` and the ``*_eval.sh`` scripts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from experiments.llama.data import TEST_SETS
from experiments.llama.prompts import LOSS_MODES
from experiments.targeting import BLOCKS, parse_blocks


@dataclass(frozen=True)
class ModelSpec:
    """A base model: where to find it and the architecture a folder must have to be accepted."""

    key: str
    hub_id: str
    environment_variable: str
    learning_rate: float
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int


# Architectures from the config.json of the public mirrors of the two checkpoints.
MODELS = {
    "llama2-7b": ModelSpec("llama2-7b", "meta-llama/Llama-2-7b-hf", "BLOCKRANK_LLAMA2_7B", 2e-4, 32, 4096, 32, 32),
    "llama3-8b": ModelSpec("llama3-8b", "meta-llama/Meta-Llama-3-8B", "BLOCKRANK_LLAMA3_8B", 1e-4, 32, 4096, 32, 8),
}

METHODS = ("lora", "dora")
DTYPES = ("bfloat16", "float16", "float32")
SELECTIONS = ("best_validation", "last")

# The reference protocol, field by field; `deviations` compares a config against it.
REFERENCE = {
    "loss_mode": "whole",
    "weight_decay": 0.0,
    "dtype": "float16",
    "num_beams": 4,
    "do_sample": False,
    "max_new_tokens": 32,
    "eval_batch_size": 1,
    "global_batch_size": 16,
    "epochs": 3,
    "cutoff_len": 256,
    "validation_size": 120,
    "selection": "best_validation",
}


@dataclass(frozen=True)
class RunConfig:
    """Settings of one run. Defaults follow appendix D of the paper where it states them, DoRA elsewhere."""

    experiment: str
    model: str
    blocks: str
    rank: int
    seed: int = 42
    method: str = "lora"
    alpha: float | None = None  # None means 2 * rank
    dropout: float = 0.05
    learning_rate: float | None = None  # None means the model's rate in MODELS
    weight_decay: float = 0.1
    warmup_steps: int = 100
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    epochs: float = 3.0
    global_batch_size: int = 16
    micro_batch_size: int = 16
    cutoff_len: int = 256
    loss_mode: str = "label"
    validation_size: int = 120
    validation_seed: int = 42
    eval_every: int = 80
    selection: str = "best_validation"
    dtype: str = "bfloat16"
    num_beams: int = 4
    do_sample: bool = False
    max_new_tokens: int = 32
    eval_batch_size: int = 1
    test_sets: tuple[str, ...] = tuple(test_set.name for test_set in TEST_SETS)
    train_limit: int | None = None  # use only the first N training records (smoke runs)
    test_limit: int | None = None  # evaluate only the first N examples of each test set
    max_steps: int | None = None  # stop after N optimizer steps (the schedule still spans `epochs`)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", "".join(b for b in BLOCKS if b in parse_blocks(self.blocks)))
        object.__setattr__(self, "test_sets", tuple(self.test_sets))
        object.__setattr__(self, "adam_betas", tuple(self.adam_betas))
        _check_choice("method", self.method, METHODS)
        _check_choice("loss_mode", self.loss_mode, LOSS_MODES)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("selection", self.selection, SELECTIONS)
        unknown = sorted(set(self.test_sets) - {test_set.name for test_set in TEST_SETS})
        if unknown:
            raise ValueError(f"unknown test sets {unknown}: choose from {[t.name for t in TEST_SETS]}")
        for name in ("rank", "global_batch_size", "micro_batch_size", "cutoff_len", "eval_every",
                     "num_beams", "max_new_tokens", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if self.model not in MODELS and self.learning_rate is None:
            raise ValueError(f"model {self.model!r} is not one of {sorted(MODELS)}: give learning_rate explicitly")

    @property
    def lora_alpha(self) -> float:
        return float(2 * self.rank if self.alpha is None else self.alpha)

    @property
    def lr(self) -> float:
        return MODELS[self.model].learning_rate if self.learning_rate is None else self.learning_rate

    def as_dict(self) -> dict[str, Any]:
        """Return the config as stored in the result file: every field, resolved defaults, deviations."""
        record = dataclasses.asdict(self)
        record["alpha"] = self.lora_alpha
        record["learning_rate"] = self.lr
        record["adam_betas"] = list(self.adam_betas)
        record["test_sets"] = list(self.test_sets)
        record["deviations"] = deviations(self)
        return record


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"invalid {name} {value!r}: choose one of {choices}")


def deviations(config: RunConfig) -> dict[str, dict[str, Any]]:
    """Map each setting that differs from the DoRA reference scripts to its reference and used value."""
    found = {}
    for name, reference in REFERENCE.items():
        used = getattr(config, name)
        if used != reference:
            found[name] = {"reference": reference, "used": used}
    if config.micro_batch_size != config.global_batch_size:
        found["micro_batch_size"] = {"reference": 16, "used": config.micro_batch_size,
                                     "note": "gradient accumulation; the loss is still the token mean of the batch"}
    for name in ("train_limit", "test_limit", "max_steps"):
        if getattr(config, name) is not None:
            found[name] = {"reference": None, "used": getattr(config, name)}
    all_test_sets = [test_set.name for test_set in TEST_SETS]
    if list(config.test_sets) != all_test_sets:
        found["test_sets"] = {"reference": all_test_sets, "used": list(config.test_sets)}
    # Always different from the reference code, whatever the settings.
    found["validation_loss"] = {"reference": "mean of per-batch token means (HF Trainer)",
                                "used": "token mean over the whole validation set"}
    found["generation_attention_mask"] = {"reference": "not passed to generate()",
                                          "used": "passed explicitly (left padding when eval_batch_size > 1)"}
    if config.loss_mode == "whole":
        found["first_token_label"] = {"reference": "predicted from the last pad position in left-padded rows",
                                      "used": "never predicted, as in an unpadded row"}
    found["data_order"] = {"reference": "unseeded shuffle", "used": f"shuffle seeded with seed={config.seed}"}
    found["adapter_at_evaluation"] = {"reference": "merged into the float16 weights",
                                      "used": f"kept separate (float32 adapter on {config.dtype} weights)"}
    return found


# Tables 3 and 4 compare QK, QV and OV at ranks 1, 2, 4 and 8. Figures 2 and 6 train V, then V+Q
# and V+O, at rank 1. Figure 5 compares V+Q and V+O at rank 2. Figure 4 tunes Q, K, V or O alone
# at rank 1 on LLaMA2.
TABLES = {
    "3": ("llama2-7b", ("QK", "QV", "OV"), (1, 2, 4, 8)),
    "4": ("llama3-8b", ("QK", "QV", "OV"), (1, 2, 4, 8)),
}
FIGURES = {
    "2": ("llama2-7b", ("V", "QV", "VO"), (1,)),
    "4": ("llama2-7b", ("Q", "K", "V", "O"), (1,)),
    "5": ("llama2-7b", ("QV", "VO"), (2,)),
    "6": ("llama3-8b", ("V", "QV", "VO"), (1,)),
}


def experiment_name(model: str) -> str:
    """Return the result-folder name shared by every table and figure run on `model`."""
    return f"commonsense_{model.replace('-', '_')}"


def paper_runs(table: str | None = None, figure: str | None = None, seeds: tuple[int, ...] = (42,),
               **overrides: Any) -> list[RunConfig]:
    """List the runs behind one table or figure (or all of them), deduplicated, in a stable order."""
    if table is not None and table not in TABLES:
        raise ValueError(f"table {table!r} is not a LLaMA table: choose one of {sorted(TABLES)}")
    if figure is not None and figure not in FIGURES:
        raise ValueError(f"figure {figure!r} is not a LLaMA figure: choose one of {sorted(FIGURES)}")
    if table is not None:
        plans = [TABLES[table]]
    elif figure is not None:
        plans = [FIGURES[figure]]
    else:
        plans = list(TABLES.values()) + list(FIGURES.values())

    runs, seen = [], set()
    for model, block_sets, ranks in plans:
        for rank in ranks:
            for blocks in block_sets:
                for seed in seeds:
                    config = RunConfig(experiment=experiment_name(model), model=model, blocks=blocks,
                                       rank=rank, seed=seed, **overrides)
                    key = repr(sorted(config.as_dict().items()))
                    if key not in seen:
                        seen.add(key)
                        runs.append(config)
    return runs
