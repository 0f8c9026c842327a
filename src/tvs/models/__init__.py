"""The models room: build an arch (:mod:`~tvs.models.archs`), fetch pretrained weights (:mod:`~tvs.models.sources`,
:mod:`~tvs.models.lite0`), check them (:mod:`~tvs.models.checks`), load them and branch the arms
(:mod:`~tvs.models.weights`), save and load checkpoints (:mod:`~tvs.models.checkpoint`)."""
