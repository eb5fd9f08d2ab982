"""Analyses from the papers, one command each (SPEC §5).

* :mod:`hf_infonc.analysis.grokking`: modular addition ``(a+b) mod 113`` with a one-layer
  transformer; MIR and HDR between the final-position features and the unembedding rows of the
  labels, tracked through the generalisation jump
  (``python -m hf_infonc.analysis.grokking --steps N --out DIR``).

Submodules are imported on demand (they pull in matplotlib / tqdm); this package imports nothing.
"""
