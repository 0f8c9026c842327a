"""The data room: scan and check an ImageFolder, decode and cache it, split it, and open the cache.

- :mod:`tvs.data.tree`: every entry as ``dvc add`` sees it: links out, special files, names it cannot store.
- :mod:`tvs.data.scan`: list the files, check them before and after decoding; the check before ``dvc add``.
- :mod:`tvs.data.decode`: read one file into pixels, its size bounded before decoding; a folder in threads.
- :mod:`tvs.data.prepare`: decode once into the uint8 cache, split, write the manifest (``prepare`` only).
- :mod:`tvs.data.prepared`: open what ``prepare`` wrote (training, evaluation, the study's report).
- :mod:`tvs.data.split`: stratified splits and the nested training subsets of ``data.train_fraction``.
"""
