"""The training job's library: the experiment, the step, the loop, checkpoints, logs."""
