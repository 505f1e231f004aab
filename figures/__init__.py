"""Tables, figures and the audit of the paper's own numbers (`make figures`).

"The paper" in this package is "LoRA in the right place: which block to tune in
parameter-efficient fine-tuning?", which this repository accompanies.
"""
