"""The gateway's commands run as real processes (CLI, workers, demo, the hostile corpus)."""
