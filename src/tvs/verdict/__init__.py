"""The verdict room: the shared rule and wording (:mod:`~tvs.verdict.rules`), the main pipeline's
verdict (:mod:`~tvs.verdict.pair`) and its figure (:mod:`~tvs.verdict.plots`)."""
