"""The references of hf_infonc, written once: the code, the metric modules, the model card and the
README all use these (``tests/test_layering.py`` checks the README against them)."""

from __future__ import annotations

#: Song, Tan, Zou, Chen, Ma & Huang, arXiv 2409.16767: MIR, HDR, CMA (the method of hf_infonc).
EXPLORING = """@article{song2024exploring,
  title   = {Exploring Information-Theoretic Metrics Associated with Neural Collapse in Supervised Training},
  author  = {Song, Kun and Tan, Zhiquan and Zou, Bochao and Chen, Jiansheng and Ma, Huimin and Huang, Weiran},
  journal = {arXiv preprint arXiv:2409.16767},
  year    = {2024}
}"""

#: The ICML 2024 companion, arXiv 2406.03999: matrix mutual information, the MI / entropy-gap losses.
UNVEILING = """@inproceedings{song2024unveiling,
  title     = {Unveiling the Dynamics of Information Interplay in Supervised Learning},
  author    = {Song, Kun and Tan, Zhiquan and Zou, Bochao and Ma, Huimin and Huang, Weiran},
  booktitle = {Proceedings of the 41st International Conference on Machine Learning},
  series    = {Proceedings of Machine Learning Research},
  volume    = {235},
  pages     = {46156--46167},
  year      = {2024},
  note      = {arXiv:2406.03999}
}"""

#: Papyan, Han & Donoho 2020: neural collapse, NC1-NC4.
NEURAL_COLLAPSE = """@article{papyan2020prevalence,
  title   = {Prevalence of Neural Collapse during the Terminal Phase of Deep Learning Training},
  author  = {Papyan, Vardan and Han, X. Y. and Donoho, David L.},
  journal = {Proceedings of the National Academy of Sciences},
  volume  = {117},
  number  = {40},
  pages   = {24652--24663},
  year    = {2020}
}"""

#: Zhou et al. 2022: CoOp prompt learning.
COOP = """@article{zhou2022coop,
  title   = {Learning to Prompt for Vision-Language Models},
  author  = {Zhou, Kaiyang and Yang, Jingkang and Loy, Chen Change and Liu, Ziwei},
  journal = {International Journal of Computer Vision},
  year    = {2022}
}"""

#: Hu et al. 2022: LoRA.
LORA = """@inproceedings{hu2022lora,
  title     = {{LoRA}: Low-Rank Adaptation of Large Language Models},
  author    = {Hu, Edward J. and Shen, Yelong and Wallis, Phillip and Allen-Zhu, Zeyuan and Li, Yuanzhi and Wang, Shean and Wang, Lu and Chen, Weizhu},
  booktitle = {International Conference on Learning Representations},
  year      = {2022}
}"""

#: Xiao, Rasul & Vollgraf 2017: the Fashion-MNIST data set (the ``fashion_mnist`` source).
FASHION_MNIST = """@article{xiao2017fashion,
  title   = {Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms},
  author  = {Xiao, Han and Rasul, Kashif and Vollgraf, Roland},
  journal = {arXiv preprint arXiv:1708.07747},
  year    = {2017}
}"""

#: What to cite for hf_infonc's measures and losses: the two papers of the method.
CITATION = f"{EXPLORING}\n\n{UNVEILING}"
