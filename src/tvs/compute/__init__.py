"""Where and how models run, shared by training and evaluation: the runtime decisions (device,
precision, threads, seeding, DDP; :mod:`~tvs.compute.runtime`) and batches and inference
(:mod:`~tvs.compute.batches`)."""
