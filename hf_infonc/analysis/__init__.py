"""The paper's analyses, one command each (docs/analysis.md): ``hf-infonc analyze {lmc,prune,grokking}``.

Submodules are imported on demand (they pull in matplotlib / tqdm); this package imports nothing.
"""
