"""The evaluate room: score checkpoints on the test split (:mod:`~tvs.evaluate.scoring`), their
metrics (:mod:`~tvs.evaluate.metrics`) and the paired statistics (:mod:`~tvs.evaluate.stats`)."""
