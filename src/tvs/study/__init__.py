"""The data-efficiency study's report: its params (:mod:`~tvs.study.params`), the curve over seeds
(:mod:`~tvs.study.summary`) and its verdict, table and plot (:mod:`~tvs.study.report`). The study
trains and scores through the main pipeline's stages; no training code lives here."""
