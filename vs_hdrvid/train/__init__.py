"""Training of the Chen et al. (ICCV 2021) and DeAltHDR networks on the synthetic data of
``vs_hdrvid.synth``, and DeAltHDR's self-supervised adaptation to unlabeled footage.

``data`` (windows, patches, augmentation), ``losses`` (mu-law L1, eq. 6, perceptual substitute,
EPE), ``config`` (the settings of a run), ``stages`` (one module per stage: spynet, coarse, refine
and finetune, dealthdr, adapt; each owns its options, networks, loss, validation and deviations),
``loop`` (the one loop: schedule, validation, checkpoints, budget, shipping into ``weights/``),
``cli`` (``vs-hdrvid train``), ``adapt_cli`` (``vs-hdrvid adapt``, Algorithm 1), ``plan``
(``vs-hdrvid train-all``), ``bench`` (``vs-hdrvid bench-train``), ``fastpath``.
"""
