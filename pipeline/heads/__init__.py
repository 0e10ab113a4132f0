"""Stage 2's models: the classifier registry (every entry a scikit-learn estimator), the
Keras dense head, streaming fits for features larger than memory, and saving them.

Import the submodule you need: the registry imports scikit-learn, which
stage-1 commands should not wait for.
"""
