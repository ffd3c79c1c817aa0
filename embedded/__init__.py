"""The embedded model: a small masked diffusion LM that ships with the project (task mix, tokenizer, trainer)."""
