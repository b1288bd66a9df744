"""lit_career: next-occupation prediction with fine-tuned language models."""
