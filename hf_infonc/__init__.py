"""hf_infonc: information-theoretic neural-collapse measures and losses for Hugging Face fine-tuning."""

__version__ = "0.1.0"
