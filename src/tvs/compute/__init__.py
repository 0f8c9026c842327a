"""Where and how models run, shared by training and evaluation: the runtime decisions (device,
precision, threads, seeding, DDP; :mod:`~tvs.compute.runtime`), batches and inference
(:mod:`~tvs.compute.batches`), and the classification scores both report (:mod:`~tvs.compute.scores`)."""
