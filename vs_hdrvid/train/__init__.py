"""Training of the Chen et al. (ICCV 2021) networks on the synthetic data of ``vs_hdrvid.synth``.

``data`` (windows, patches, augmentation), ``losses`` (mu-law L1, eq. 6, perceptual substitute,
EPE), ``config`` (one dataclass per run), ``stages`` (spynet, coarse, refine, finetune), ``loop``
(schedule, validation, checkpoints, shipping into ``weights/``) and ``cli`` (``vs-hdrvid train``).
"""
