"""The data room: scan and check an ImageFolder, decode and cache it, split it, and open the cache.

- :mod:`tvs.data.scan`: list the files and the checks that need no decoding (``prepare`` only).
- :mod:`tvs.data.prepare`: decode once into the uint8 cache, split, write the manifest (``prepare`` only).
- :mod:`tvs.data.prepared`: open what ``prepare`` wrote (training, evaluation, the study's report).
- :mod:`tvs.data.split`: stratified splits and the nested training subsets of ``data.train_fraction``.
"""
