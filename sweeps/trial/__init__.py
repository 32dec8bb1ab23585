"""One trial, as a Ray worker runs it: task data (`data`), batches (`batches`), the training loop and
evaluation (`run`), checkpoints (`checkpoint`), soft-target coverage (`coverage`), the memory planner
(`memory`), data figures (`figures`) and the Tune function trainable (`trainable`)."""

STATE_FILE = "trial_state.pt"  # what a trial checkpoint folder holds (`checkpoint`); torch-free for the CLI's checks
# A result key: True on a multi-worker trial's first report after a restart, which reports its
# checkpoint's evaluation again (`run.run_trial`); the driver logs it only if its record lacks it.
REPLAYED = "replayed"
