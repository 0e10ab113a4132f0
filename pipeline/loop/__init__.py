"""The labelling loop on cached features: which images to label next, and whether a new batch
is like the training images.

- :func:`pipeline.loop.replay.replay` replays the loop on labelled images, with each strategy and
  random, and recommends the strategy that saves the most labels;
- :func:`pipeline.loop.suggest.suggest` ranks a folder of unlabelled images for labelling;
- :func:`pipeline.loop.drift.drift` tests whether a batch is drawn like a run's training images,
  and names its most novel images.

The package imports nothing: the settings classes read the strategy table
without scikit-activeml. ``pipeline`` exports the three functions.
"""
