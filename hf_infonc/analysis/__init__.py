"""Analyses from the papers, one command each (docs/theory.md §5): ``hf-infonc analyze {lmc,prune,grokking}``.

* :mod:`~hf_infonc.analysis.lmc`: accuracy, MIR and HDR along the segment between two checkpoints;
* :mod:`~hf_infonc.analysis.prune`: global magnitude pruning, MIR between the features before and after;
* :mod:`~hf_infonc.analysis.grokking`: modular addition ``(a+b) mod 113`` with a one-layer transformer,
  MIR and HDR through the generalisation jump (``python -m hf_infonc.analysis.grokking --steps N --out DIR``).

Submodules are imported on demand (they pull in matplotlib / tqdm); this package imports nothing.
"""
