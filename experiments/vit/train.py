"""Run one ViT fine-tuning config end to end and write its result file.

Per epoch the run records the mean train loss, the test accuracy and the
spectral and Frobenius norms of the effective Q, K, V, O weights of every layer,
shows a batch progress bar and logs one line:

    epoch  3/20 train_loss 0.4123 test_acc 83.41 best 83.41 lr 8.10e-04 12.3s
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from experiments.results import config_hash, write_result
from experiments.vit import distributed, model_setup
from experiments.vit.backbones import create_backbone, get_backbone
from experiments.vit.config import RunConfig

logger = logging.getLogger(__name__)


@dataclass
class RunEnvironment:
    """Input locations and execution settings of a run, which do not enter the result's config hash."""

    output_root: Path
    data_root: Path | None = None
    checkpoint_dir: Path | None = None
    download: bool = False
    verify_checksums: bool = True
    check_sizes: bool = True
    device: str = "cpu"
    num_workers: int = 0
    progress: bool = True
    save_adapters: bool = False


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def build_loaders(config: RunConfig, env: RunEnvironment, mean, std, generator: torch.Generator):
    """Return (train loader, test loader, number of classes) of the run's dataset."""
    if config.dataset == "digits":
        from experiments.vit import digits

        splits = digits.load_splits()
        train, test = splits["target_train"].dataset(), splits["target_test"].dataset()
        num_classes, drop_last = len(digits.TARGET_CLASSES), False
    else:
        from experiments.vit import data

        if env.data_root is None:
            raise ValueError(f"dataset {config.dataset!r} needs --data-root (the folder holding {config.dataset}/)")
        train_transform, test_transform = data.build_transforms(config.image_size, mean, std)
        train, test, num_classes = data.load_image_dataset(
            config.dataset, env.data_root, train_transform=train_transform, test_transform=test_transform,
            download=env.download, verify_checksums=env.verify_checksums, check_sizes=env.check_sizes)
        drop_last = len(train) > config.batch_size  # AdaptFormer drops the last partial batch
    pin = env.device.startswith("cuda")
    sampler = None
    if distributed.is_distributed():
        from torch.utils.data.distributed import DistributedSampler

        # Each process trains on its own shard of every epoch, and set_epoch reshuffles the shards.
        sampler = DistributedSampler(train, shuffle=True, seed=config.seed, drop_last=drop_last)
    train_loader = DataLoader(train, batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
                              drop_last=drop_last, generator=generator, num_workers=env.num_workers,
                              pin_memory=pin)
    test_loader = DataLoader(test, batch_size=max(config.batch_size, 256), shuffle=False,
                             num_workers=env.num_workers, pin_memory=pin)
    return train_loader, test_loader, num_classes


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: str) -> float:
    """Return top-1 accuracy in percent."""
    model.eval()
    correct, total = 0, 0
    for images, labels in loader:
        logits = model(images.to(device, non_blocking=True))
        correct += int((logits.argmax(dim=-1).cpu() == labels).sum())
        total += len(labels)
    return 100.0 * correct / total


def _optimizer(model: torch.nn.Module, config: RunConfig, lr: float):
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=config.weight_decay)
    # Appendix D: the learning rate decays by 0.9 after every epoch.
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay)
    return optimizer, schedule


def run(config: RunConfig, env: RunEnvironment) -> Path:
    """Train `config`, write `results/<profile>/<experiment>/<hash>.json` and return its path."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    env.device = distributed.initialise(env.device)
    generator = seed_everything(config.seed)
    backbone = get_backbone(config.backbone)
    train_loader, test_loader, num_classes = build_loaders(config, env, backbone.mean, backbone.std, generator)
    model, load_report = create_backbone(config.backbone, num_classes, checkpoint_dir=env.checkpoint_dir,
                                         download=env.download, checkpoint_name=config.checkpoint or None)
    probe = next(iter(test_loader))[0][:8]
    model_setup.modify_norms(model, config.modification, config.modification_factor, probe=probe)
    model.to(env.device)

    layers = model_setup.attention_layers(model)
    steps_per_epoch = len(train_loader)
    model, report = model_setup.attach_adapters(model, config, config.blocks, config.epochs * steps_per_epoch)
    wrapped = {config.blocks: report.wrapped_modules}
    initial_norms = model_setup.effective_block_norms(model, layers)
    optimizer, schedule = _optimizer(model, config, config.lr)
    trained = distributed.wrap(model, env.device)  # what forward runs through; `model` stays the peft model

    history: list[dict[str, Any]] = []
    step = 0
    best = -1.0
    for epoch in range(1, config.epochs + 1):
        if config.switch_blocks and epoch == config.switch_epoch + 1:
            # Figure 1(c): keep what the first blocks learned, then tune fresh adapters elsewhere.
            lr = schedule.get_last_lr()[0]
            model = model_setup.merge_adapters(model)
            model, switched = model_setup.attach_adapters(model, config, config.switch_blocks,
                                                          (config.epochs - config.switch_epoch) * steps_per_epoch)
            wrapped[config.switch_blocks] = switched.wrapped_modules
            optimizer, schedule = _optimizer(model, config, lr)
            trained = distributed.wrap(model, env.device)
            logger.info("epoch %d: merged %s adapters, now tuning %s", epoch, config.blocks, config.switch_blocks)

        model.train()
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        epoch_started = time.perf_counter()
        lr = schedule.get_last_lr()[0]
        loss_sum, seen = 0.0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{config.epochs}", leave=False, disable=not env.progress)
        for images, labels in bar:
            images, labels = images.to(env.device, non_blocking=True), labels.to(env.device, non_blocking=True)
            loss = F.cross_entropy(trained(images), labels)
            total = loss
            if config.method == "adalora":
                total = loss + config.adalora_orth_reg * model_setup.adalora_orthogonal_penalty(model)
            if not torch.isfinite(total):
                raise FloatingPointError(
                    f"non-finite loss {float(total)} at epoch {epoch}, step {step} of run "
                    f"{config.experiment}/{config.blocks}/r{config.rank}/seed{config.seed}; lower lr ({config.lr})"
                )
            total.backward()
            optimizer.step()
            if config.method == "adalora":
                # AdaLoRA reads the gradients, so it runs after backward() and before zero_grad().
                model.base_model.update_and_allocate(step)
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loss_sum += loss.item() * len(labels)
            seen += len(labels)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        schedule.step()

        accuracy = evaluate(model, test_loader, env.device)
        best = max(best, accuracy)
        loss_sum, seen = distributed.sum_over_processes([loss_sum, float(seen)], env.device)
        train_loss = loss_sum / seen
        history.append({"epoch": epoch, "train_loss": train_loss, "test_accuracy": accuracy, "lr": lr,
                        "tuned_blocks": config.switch_blocks if config.switch_blocks and epoch > config.switch_epoch
                        else config.blocks,
                        "norms": model_setup.effective_block_norms(model, layers)})
        logger.info("epoch %2d/%d train_loss %.4f test_acc %.2f best %.2f lr %.2e %.1fs", epoch, config.epochs,
                    train_loss, accuracy, best, lr, time.perf_counter() - epoch_started)

    metrics = {
        "test_accuracy_last": history[-1]["test_accuracy"],
        "test_accuracy_best": best,
        "best_epoch": max(history, key=lambda row: row["test_accuracy"])["epoch"],
        "train_loss_last": history[-1]["train_loss"],
        "trainable_params": report.trainable_params,
        "head_params": report.head_params,
        "adapter_params": report.trainable_params - report.head_params,
        "seconds": round(time.perf_counter() - started, 2),
    }
    assert all(math.isfinite(value) for value in metrics.values()), f"non-finite metric in {metrics}"
    directory = Path(env.output_root) / config.profile / config.experiment
    if not distributed.is_main():
        distributed.barrier()
        return directory / f"{config_hash(config.to_dict())}.json"
    if env.save_adapters:
        model_setup.save_adapters(model, directory / "adapters" / config_hash(config.to_dict()))
    path = write_result(directory, config.to_dict(), metrics, history, wrapped_modules=wrapped,
                        backbone_load=load_report, initial_norms=initial_norms, device=env.device,
                        torch_version=torch.__version__, world_size=distributed.world_size())
    distributed.barrier()
    logger.info("finished %s %s %s r=%d seed=%d: last %.2f best %.2f (%d params) -> %s", config.experiment,
                config.dataset, config.blocks, config.rank, config.seed, metrics["test_accuracy_last"], best,
                report.trainable_params, path)
    return path
