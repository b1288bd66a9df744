"""The LM stack: backbone, corpus DataModule, fine-tuning, closed-set scorer, resume-pass features, heads."""
