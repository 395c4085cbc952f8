"""Evaluation: forward passes over image sets, the statistics scores fit on the training images, every
score of one network (:mod:`.evaluate`), the score registry (:mod:`.scores`), and a run's calibration
(:mod:`.calibration`, what applying a network needs besides it)."""
