"""Training of the Chen et al. (ICCV 2021) and DeAltHDR networks on the synthetic data of
``vs_hdrvid.synth``, and DeAltHDR's self-supervised adaptation to unlabeled footage.

``data`` (windows, patches, augmentation), ``losses`` (mu-law L1, eq. 6, perceptual substitute,
EPE), ``config`` (one dataclass per run), ``stages`` (spynet, coarse, refine, finetune, dealthdr),
``loop`` (schedule, validation, checkpoints, shipping into ``weights/``), ``cli`` (``vs-hdrvid
train``), ``adapt`` and ``adapt_cli`` (``vs-hdrvid adapt``, Algorithm 1).
"""
