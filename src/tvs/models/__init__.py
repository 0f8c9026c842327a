"""The models room: build an arch (:mod:`~tvs.models.archs`), load pretrained weights into it and
branch the arms (:mod:`~tvs.models.weights`), save and load checkpoints (:mod:`~tvs.models.checkpoint`)."""
