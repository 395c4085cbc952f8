"""Training: the train state and optimiser (:mod:`.state`), the device
mesh (:mod:`.mesh`), the sharded step and two-stage loop (:mod:`.loop`), Orbax checkpoints
(:mod:`.checkpoints`) and the metrics log (:mod:`.run_log`)."""
