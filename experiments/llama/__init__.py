"""LLaMA half of the experiments: commonsense reasoning with LoRA on chosen attention blocks.

Modules, in pipeline order:
- `data` reads commonsense-170k and the eight test sets in the LLM-Adapters / DoRA JSON format.
- `prompts` builds and tokenizes prompts; `training` runs the optimisation loop (data parallel).
- `evaluation` generates answers and `answers` extracts and scores them.
- `run` ties one configuration together and writes its result file.
- `configs` lists the runs behind each table and figure of "LoRA in the right place".
- `reproduce` is the `make reproduce` entry point.
"""
