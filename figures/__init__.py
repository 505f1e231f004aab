"""Tables, figures and the audit of the paper's own numbers (`make figures`)."""
