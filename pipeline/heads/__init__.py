"""Stage 2's models: the classifier registry (every entry a scikit-learn estimator), the
Keras dense head, streaming fits for features larger than memory, and saving them.

Import the submodule you need. The registry and the vocabulary import nothing heavy (the
settings check names against them); the other modules import scikit-learn or h5py.
"""
