"""The application built on the library: training and pretraining loops, the demo, data loading,
checkpoints, evaluation of trained models and the ``hashkern`` command.

``hashkern.training.loop`` is the generic loop (seeded batches, schedule, parameter groups, resume
checks, DDP, checkpoints, progress); :mod:`hashkern.training.train` (hashing) and
:mod:`hashkern.training.pretrain` (contrastive pretraining) are the tasks it drives.
"""
