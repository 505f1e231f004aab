"""LLaMA half of the experiments: commonsense reasoning with LoRA on chosen attention blocks.

Modules, in pipeline order: `data` reads commonsense-170k and the eight test sets in the
LLM-Adapters / DoRA JSON format, `prompts` builds and tokenizes prompts, `training` runs the
optimisation loop (data parallel under torchrun), `answers` and `evaluation` generate and score
answers, `run` ties one configuration together and writes its result file, `configs` lists the
runs behind each paper table and figure, and `reproduce` is the `make reproduce` entry point.
"""
