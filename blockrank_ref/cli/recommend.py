"""`blockrank recommend MODEL`: per-layer norms of Q, K, V, O and the blocks to tune, by the rule of section 3.2."""

from __future__ import annotations

import argparse
import json

from blockrank_ref.cli import UsageError

DESCRIPTION = """\
Print, for every attention layer of MODEL, the spectral and Frobenius norms of W_Q, W_K, W_V and W_O,
the block(s) to tune, a one-line reason, and a peft LoraConfig target_modules value.

Rule ("LoRA in the right place", section 3.2): Q and K are never chosen, because the softmax
damps their effect. With --blocks 2 every layer gets O and V. With --blocks 1, let
rho = ||W_V|| / ||W_O||. Choose V if 1/rho >= T (O markedly larger), otherwise O: O ranks first
when the norms are comparable, and it is the smaller block when V is markedly larger. The paper
does not quantify "differ markedly", so T is --ratio-threshold (default 2.0, our choice).

With grouped-query attention the K and V norms are those of the effective matrices in which each
key/value head is repeated for its query heads (a factor sqrt(heads / kv_heads)); --raw-kv-norms
reports the stored k_proj / v_proj weights instead. Runs offline."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("recommend", help="recommend which attention blocks to tune",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL",
                        help="a local Hugging Face model folder (with config.json) or a timm model name")
    parser.add_argument("--checkpoint", metavar="FILE", help="local weights for a timm model name")
    parser.add_argument("--blocks", type=int, choices=(1, 2), default=1,
                        help="number of blocks to tune per layer (default: 1)")
    parser.add_argument("--norm", choices=("spectral", "frobenius"), default="spectral",
                        help="norm compared between V and O (default: spectral, as in Theorem 3)")
    parser.add_argument("--ratio-threshold", type=float, default=2.0, metavar="T",
                        help="norm ratio at or above which V and O 'differ markedly' (default: 2.0, must be > 1)")
    parser.add_argument("--raw-kv-norms", action="store_true",
                        help="with grouped-query attention, report the stored K and V weights' norms")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from experiments.recommend import load_model, recommend

    try:
        model = load_model(args.model, args.checkpoint)
        result = recommend(model, blocks=args.blocks, norm=args.norm, ratio_threshold=args.ratio_threshold,
                           expand_kv=not args.raw_kv_norms)
    except ValueError as error:
        raise UsageError(str(error)) from error
    if args.json:
        print(json.dumps({"model": args.model, **result.to_dict()}, indent=2))
        return 0
    print(f"model: {args.model}")
    print(f"rule: {result.rule}")
    header = (f"{'layer':>5}  {'|Q|_2':>8} {'|K|_2':>8} {'|V|_2':>8} {'|O|_2':>8}  "
              f"{'|Q|_F':>8} {'|K|_F':>8} {'|V|_F':>8} {'|O|_F':>8}  {'tune':>4}  reason")
    print(header)
    for choice, norms in zip(result.layers, result.norms):
        spectral = " ".join(f"{norms.spectral[b]:8.3f}" for b in "QKVO")
        frobenius = " ".join(f"{norms.frobenius[b]:8.3f}" for b in "QKVO")
        print(f"{choice.index:>5}  {spectral}  {frobenius}  {choice.blocks:>4}  {choice.reason}")
    groups = {norms.kv_groups for norms in result.norms}
    if groups != {1}:
        kind = "stored weights" if args.raw_kv_norms else "effective (repeated) matrices"
        print(f"grouped-query attention: {max(groups)} query heads per key/value head; K and V norms are "
              f"of the {kind}")
    print(f"target_modules = {json.dumps(result.target_modules)}")
    if any(".qkv." in name or name.startswith("qkv.") for name in result.target_modules):
        print("note: timm fuses Q, K and V; call experiments.targeting.split_fused_qkv(model) before peft")
    return 0
