"""The train room: the stage's worker (:mod:`~tvs.train.worker`), the loop (:mod:`~tvs.train.loop`),
augmentation (:mod:`~tvs.train.augment`), and what a run records beside the loop: checkpoint,
curves (:mod:`~tvs.train.bookkeeping`) and resume state (:mod:`~tvs.train.resume`)."""
