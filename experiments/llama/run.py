"""One LLaMA run end to end: load, attach adapters, train, evaluate, write the result file.

Also a command line for a single configuration, for launchers that start one process per GPU:

    torchrun --nproc_per_node 8 -m experiments.llama.run --config run.json \\
        --model-dir /models/Llama-2-7b-hf --data-dir /data/commonsense --results-dir results/paper_scale

`run.json` contains `RunConfig` fields, e.g. {"experiment": "commonsense_llama2_7b", "model":
"llama2-7b", "blocks": "OV", "rank": 1}.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from experiments import results
from experiments.llama.block_norms import pretrained_norms, tuned_block_norms
from experiments.llama.configs import MODELS, RunConfig
from experiments.llama.data import find_train_file, read_records, split_train_validation
from experiments.llama.distributed import DistContext, close_distributed, init_distributed
from experiments.llama.evaluation import evaluate
from experiments.llama.training import Trainer
from experiments.targeting import adapter_modules, apply_block_adapters

logger = logging.getLogger(__name__)

TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def check_architecture(model_config, model_key: str, path: str) -> None:
    """Raise ValueError when a folder's config.json does not describe the architecture of `model_key`."""
    if getattr(model_config, "model_type", None) != "llama":
        raise ValueError(f"{path} contains a {getattr(model_config, 'model_type', 'unknown')!r} model; "
                         "expected a LLaMA checkpoint (model_type 'llama')")
    spec = MODELS.get(model_key)
    if spec is None:
        return
    for name in ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads"):
        found, expected = getattr(model_config, name, None), getattr(spec, name)
        if found != expected:
            raise ValueError(f"{path} has {name}={found}, but {model_key} ({spec.hub_id}) has {expected}; "
                             "is this the right model folder?")


def load_model_and_tokenizer(path: str, model_key: str, dtype: str, device: torch.device):
    """Load a LLaMA causal LM and its tokenizer from a folder (or a hub id when online) for training.

    The tokenizer pads on the left; a tokenizer without a pad token gets id 0, as in the reference
    scripts (LLaMA-2's <unk>, LLaMA-3's "!"). Padded positions are masked everywhere, so the id
    never enters a loss or an attention score.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    model_config = AutoConfig.from_pretrained(path)
    check_architecture(model_config, model_key, path)
    # NOTE: the DoRA scripts tokenized LLaMA-2 text with the slow sentencepiece LlamaTokenizer. This loads
    # the tokenizers-backed class of the installed transformers. Nobody has compared how the two split
    # the 16-space indents of the prompts.
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = 0
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer in {path} has no end-of-sequence token; training appends one to each example")

    device_map = {"": str(device)} if device.type == "cuda" else None
    model = AutoModelForCausalLM.from_pretrained(path, dtype=TORCH_DTYPES[dtype], device_map=device_map)
    model.to(device)
    model.config.use_cache = False  # caching is for generation only; evaluation turns it back on
    return model, tokenizer


def _modules_by_block(model, wrapped_modules: dict[str, list[str]]) -> dict[str, list[torch.nn.Module]]:
    modules = adapter_modules(model)
    return {block: [modules[name] for name in names] for block, names in wrapped_modules.items()}


def run_config(config: RunConfig, *, model_path: str, data_dir: Path, results_dir: Path,
               context: DistContext | None = None, device: str = "auto") -> Path | None:
    """Run one configuration unless its complete result exists; return the result path (rank 0) or None."""
    context = context or init_distributed(device)
    record_config = config.as_dict()
    directory = Path(results_dir) / config.experiment
    if results.is_complete(directory, record_config):
        if context.is_main:
            logger.info("skipping %s: complete result %s exists", config.experiment,
                        results.result_path(directory, record_config))
        return results.result_path(directory, record_config)

    started = time.time()
    progress = logger.info if context.is_main else logger.debug
    torch.manual_seed(config.seed)
    records = read_records(find_train_file(data_dir), need_output=True)
    if config.train_limit is not None:
        records = records[:config.train_limit]
    train_records, validation_records = split_train_validation(records, config.validation_size,
                                                               config.validation_seed)

    model, tokenizer = load_model_and_tokenizer(model_path, config.model, config.dtype, context.device)
    norms_before = pretrained_norms(model)
    model, report = apply_block_adapters(model, method=config.method, blocks=config.blocks, rank=config.rank,
                                         alpha=config.lora_alpha, dropout=config.dropout)
    model.to(context.device)
    progress(f"{config.model} {config.method} blocks={config.blocks} r={config.rank}: "
             f"{report.trainable_params} trainable parameters")
    modules = _modules_by_block(model, report.wrapped_modules)

    checkpoint = directory / ".checkpoints" / f"{results.config_hash(record_config)}.pt"
    trainer = Trainer(model, tokenizer, config, context, lambda: tuned_block_norms(modules), checkpoint)
    outcome = trainer.run(train_records, validation_records, progress)

    model.config.use_cache = True
    finished_path = checkpoint.with_suffix(".evaluation.json")
    metrics, samples = evaluate(model, tokenizer, config, data_dir, context, progress, finished_path)
    metrics["best_validation_loss"] = outcome.best_validation_loss

    path = None
    if context.is_main:
        extra = _extra_fields(config, report, outcome, norms_before, samples, model_path, tokenizer, context,
                              len(train_records), len(validation_records), time.time() - started)
        path = results.write_result(directory, record_config, metrics, outcome.history, **extra)
        checkpoint.unlink(missing_ok=True)
        finished_path.unlink(missing_ok=True)
        progress(f"wrote {path}: average accuracy {metrics['average_accuracy']:.2f}%")
    context.barrier()
    return path


def _extra_fields(config, report, outcome, norms_before, samples, model_path, tokenizer, context, train_size,
                  validation_size, seconds) -> dict[str, Any]:
    import peft
    import transformers

    return {
        "parameters": {"trainable": report.trainable_params, "expected": report.expected_params,
                       "wrapped_modules": report.wrapped_modules},
        "pretrained_norms": norms_before,
        "training": {"total_steps": outcome.total_steps, "steps_run": outcome.steps_run,
                     "selected_step": outcome.selected_step, "resumed_from_step": outcome.resumed_from_step,
                     "examples_without_labels": outcome.examples_without_labels,
                     "train_examples": train_size, "validation_examples": validation_size},
        "samples": samples,
        "environment": {"model_path": str(model_path), "world_size": context.world_size,
                        "tokenizer_class": type(tokenizer).__name__,
                        "device": torch.cuda.get_device_name(context.device) if context.device.type == "cuda"
                        else "cpu",
                        "torch": torch.__version__, "transformers": transformers.__version__,
                        "peft": peft.__version__, "wall_seconds": round(seconds, 1)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.llama.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="JSON file with RunConfig fields")
    parser.add_argument("--model-dir", required=True, help="model folder (or hub id when online)")
    parser.add_argument("--data-dir", required=True, help="folder with commonsense_170k.json and dataset/")
    parser.add_argument("--results-dir", required=True, help="profile folder, e.g. results/paper_scale")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    fields = json.loads(Path(args.config).read_text())
    config = RunConfig(**fields)
    context = init_distributed(args.device)
    try:
        run_config(config, model_path=args.model_dir, data_dir=Path(args.data_dir),
                   results_dir=Path(args.results_dir), context=context)
    finally:
        close_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
