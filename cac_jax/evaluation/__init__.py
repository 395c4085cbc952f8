"""Evaluation: forward passes over image sets, the statistics scores fit on the training images, every
score of one network (:mod:`.evaluate`), and the score registry (:mod:`.scores`)."""
