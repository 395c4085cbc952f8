"""Runs: one run end to end (:mod:`.run`: train, evaluate, write results), evaluation of a saved run
(:mod:`.eval_run`), sweeps over trials (:mod:`.sweep`, :mod:`.parallel_trials`), reports beside the
published numbers (:mod:`.report`, :mod:`.paper_results`), plots, the import of the authors' PyTorch
networks (:mod:`.torch_import`), local multi-process jobs (:mod:`.launch`) and a trained run applied to new
images (:mod:`.predict`)."""
