"""The fine-tuning loop: AdamW, linear warm-up then linear decay to zero, data parallel.

Loss convention: the training loss of a step is the mean next-token cross-entropy over every
label token of the global batch, sum(token losses) / N with N the label count summed over all
processes. Each process backpropagates its local sum divided by N, and the adapter gradients are
then summed over processes. The gradient, the clipped update and the logged loss therefore do not
depend on how the batch is split across processes or micro-batches. With one process and no
accumulation this is the loss the reference's Hugging Face Trainer minimises.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from experiments.llama.configs import RunConfig
from experiments.llama.distributed import DistContext
from experiments.llama.prompts import IGNORE_INDEX, TokenizedExample, collate, tokenize_training_example

logger = logging.getLogger(__name__)


@dataclass
class TrainingOutcome:
    """Result of the loop: history entries, schedule length and the selected adapter state."""

    history: list[dict[str, Any]] = field(default_factory=list)
    total_steps: int = 0
    steps_run: int = 0
    selected_step: int = 0
    best_validation_loss: float = math.inf
    examples_without_labels: int = 0
    resumed_from_step: int | None = None


def linear_schedule(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Return the learning-rate factor of step t: t / warmup, then linear decay to 0 at total_steps."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


def schedule_length(num_records: int, config: RunConfig) -> tuple[int, int]:
    """Return (steps per epoch, total steps); the last, shorter batch of an epoch is kept, as the reference does."""
    steps_per_epoch = math.ceil(num_records / config.global_batch_size)
    return steps_per_epoch, math.ceil(steps_per_epoch * config.epochs)


def epoch_order(num_records: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_records)


def token_loss_sum(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Return the summed next-token cross-entropy over the label tokens of one micro-batch (float32)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shifted_logits = logits[:, :-1].float()  # (batch, length - 1, vocab)
    shifted_labels = batch["labels"][:, 1:]
    return F.cross_entropy(shifted_logits.reshape(-1, shifted_logits.shape[-1]), shifted_labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def label_tokens(example: TokenizedExample) -> int:
    """Count the labels that enter the loss (the first position predicts nothing after the shift)."""
    return sum(label != IGNORE_INDEX for label in example.labels[1:])


def _micro_batches(examples: list[TokenizedExample], size: int) -> list[list[TokenizedExample]]:
    return [examples[i:i + size] for i in range(0, len(examples), size)]


class Trainer:
    """Runs one configuration's optimisation on an adapter-wrapped causal language model."""

    def __init__(self, model, tokenizer, config: RunConfig, context: DistContext,
                 measure_norms: Callable[[], dict[str, Any]], checkpoint_path: Path | None = None) -> None:
        if config.global_batch_size % context.world_size:
            raise ValueError(
                f"global_batch_size={config.global_batch_size} is not divisible by the {context.world_size} "
                "processes; choose a batch size that is a multiple of the number of GPUs")
        self.model, self.tokenizer, self.config, self.context = model, tokenizer, config, context
        self.measure_norms = measure_norms
        self.checkpoint_path = checkpoint_path
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        if not self.parameters:
            raise ValueError("the model has no trainable parameters; were the adapters attached?")
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        # Every process seeds the adapter initialisation alike; copying rank 0's values makes that a fact.
        with torch.no_grad():
            for parameter in self.parameters:
                context.broadcast_(parameter.data)
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.lr, betas=config.adam_betas,
                                           eps=config.adam_eps, weight_decay=config.weight_decay)
        self.pad_token_id = tokenizer.pad_token_id
        # float16 activations need loss scaling, as the reference's fp16 AMP has. Gradients are
        # unscaled after the all-reduce, so every process sees the same overflow and skips alike.
        enabled = config.dtype == "float16" and context.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=enabled)

    def _tokenize(self, records: list[dict[str, Any]]) -> list[TokenizedExample]:
        return [tokenize_training_example(self.tokenizer, record, loss_mode=self.config.loss_mode,
                                          cutoff_len=self.config.cutoff_len) for record in records]

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: value.to(self.context.device) for key, value in batch.items()}

    @torch.no_grad()
    def validation_loss(self, records: list[dict[str, Any]]) -> float:
        """Return the token-mean loss over all validation records, sharded across processes."""
        self.model.eval()
        mine = np.array_split(np.arange(len(records)), self.context.world_size)[self.context.rank]
        examples = self._tokenize([records[i] for i in mine])
        totals = torch.zeros(2, dtype=torch.float64, device=self.context.device)  # (loss sum, tokens)
        for micro in _micro_batches(examples, self.config.micro_batch_size):
            totals[0] += token_loss_sum(self.model, self._to_device(collate(micro, self.pad_token_id))).double()
            totals[1] += sum(label_tokens(example) for example in micro)
        self.context.all_reduce_sum(totals)
        if totals[1] == 0:
            raise ValueError("the validation examples contain no label tokens; check cutoff_len and loss_mode")
        loss = float(totals[0] / totals[1])
        if not math.isfinite(loss):
            raise FloatingPointError(f"validation loss is {loss}; lower the learning rate or use dtype float32 "
                                     "to find the cause")
        return loss

    def _all_reduce_gradients(self) -> None:
        if not self.context.distributed:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.parameters]
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        self.context.all_reduce_sum(flat)
        offset = 0
        for parameter in self.parameters:
            size = parameter.numel()
            parameter.grad = flat[offset:offset + size].view_as(parameter).to(parameter.dtype)
            offset += size

    def _train_step(self, examples: list[TokenizedExample]) -> tuple[float, int]:
        self.model.train()
        count = torch.tensor([float(sum(label_tokens(e) for e in examples))], device=self.context.device)
        total_tokens = int(self.context.all_reduce_sum(count).item())
        local_sum = torch.zeros((), dtype=torch.float64, device=self.context.device)
        if total_tokens > 0:
            for micro in _micro_batches(examples, self.config.micro_batch_size):
                loss_sum = token_loss_sum(self.model, self._to_device(collate(micro, self.pad_token_id)))
                self.scaler.scale(loss_sum / total_tokens).backward()
                local_sum += loss_sum.detach().double()
        self._all_reduce_gradients()
        self.context.all_reduce_sum(local_sum)
        return float(local_sum / max(total_tokens, 1)), total_tokens

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().to("cpu", copy=True) for name, p in zip(self.names, self.parameters)}

    def _restore(self, snapshot: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, parameter in zip(self.names, self.parameters):
                parameter.copy_(snapshot[name])

    def run(self, train_records: list[dict[str, Any]], validation_records: list[dict[str, Any]],
            progress: Callable[[str], None] = logger.info) -> TrainingOutcome:
        """Train, validate every `eval_every` steps and at the end, and leave the selected adapter state loaded."""
        config = self.config
        steps_per_epoch, total_steps = schedule_length(len(train_records), config)
        steps_to_run = total_steps if config.max_steps is None else min(total_steps, config.max_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, linear_schedule(config.warmup_steps,
                                                                                     total_steps))
        outcome = TrainingOutcome(total_steps=total_steps)
        best_state, start = None, 0

        resumed = self._load_checkpoint(scheduler)
        if resumed is not None:
            start, outcome.history, best_state, outcome.best_validation_loss, outcome.selected_step = resumed
            outcome.resumed_from_step = start
            progress(f"resumed from the checkpoint at step {start}")
        else:
            entry = {"step": 0, "epoch": 0.0, "validation_loss": self.validation_loss(validation_records),
                     "tuned_block_norms": self.measure_norms()}
            outcome.history.append(entry)
            progress(f"step 0/{steps_to_run} validation loss {entry['validation_loss']:.4f}")

        # The bar shows only on the main process and on a terminal (disable=None turns it off elsewhere).
        bar = tqdm(total=steps_to_run, initial=start, desc="training", unit="step",
                   disable=None if self.context.is_main else True)
        for step in range(start + 1, steps_to_run + 1):
            epoch, position = divmod(step - 1, steps_per_epoch)
            order = epoch_order(len(train_records), config.seed, epoch)
            batch = order[position * config.global_batch_size:(position + 1) * config.global_batch_size]
            mine = np.array_split(batch, self.context.world_size)[self.context.rank]
            examples = self._tokenize([train_records[i] for i in mine])
            outcome.examples_without_labels += sum(label_tokens(e) == 0 for e in examples)

            learning_rate = scheduler.get_last_lr()[0]
            loss, tokens = self._train_step(examples)
            if tokens == 0:
                logger.warning("step %d: no label tokens in the batch (all truncated away); update skipped", step)
            else:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.parameters, config.max_grad_norm)
                self.scaler.step(self.optimizer)
                self.scaler.update()
            scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if not math.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss} at step {step}; lower the learning rate "
                                         "or use dtype float32 to find the cause")

            entry = {"step": step, "epoch": step / steps_per_epoch, "train_loss": loss,
                     "learning_rate": learning_rate, "label_tokens": tokens}
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if step % config.eval_every == 0 or step == steps_to_run:
                entry["validation_loss"] = self.validation_loss(validation_records)
                entry["tuned_block_norms"] = self.measure_norms()
                if entry["validation_loss"] < outcome.best_validation_loss:
                    outcome.best_validation_loss = entry["validation_loss"]
                    outcome.selected_step = step
                    best_state = self._snapshot() if config.selection == "best_validation" else None
                progress(f"step {step}/{steps_to_run} train loss {loss:.4f} "
                         f"validation loss {entry['validation_loss']:.4f} lr {learning_rate:.3g}")
                outcome.history.append(entry)
                # Saved after the last step too, so that a run killed during evaluation skips training.
                self._save_checkpoint(step, scheduler, outcome, best_state)
            else:
                outcome.history.append(entry)

        bar.close()
        outcome.steps_run = steps_to_run
        if config.selection == "last" or best_state is None:
            outcome.selected_step = steps_to_run
        else:
            self._restore(best_state)
        return outcome

    # Checkpoints hold only what the adapters need, so a killed 7B run resumes at its last validation.
    # NOTE: dropout masks after a resume differ from an uninterrupted run (the RNG state is not saved).
    def _save_checkpoint(self, step: int, scheduler, outcome: TrainingOutcome, best_state) -> None:
        if self.checkpoint_path is None or not self.context.is_main:
            return
        state = {"step": step, "parameters": self._snapshot(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                 "history": outcome.history, "best_state": best_state,
                 "best_validation_loss": outcome.best_validation_loss, "selected_step": outcome.selected_step}
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.checkpoint_path.parent, prefix=".tmp-", suffix=".pt")
        os.close(handle)
        try:
            torch.save(state, temporary)
            os.replace(temporary, self.checkpoint_path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _load_checkpoint(self, scheduler):
        if self.checkpoint_path is None or not self.checkpoint_path.exists():
            return None
        state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        self._restore(state["parameters"])
        self.optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        return (state["step"], state["history"], state["best_state"], state["best_validation_loss"],
                state["selected_step"])
