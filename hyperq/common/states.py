"""The job and task state names as users type and read them (filters, JSON)."""

JOB_STATES = ("waiting", "running", "finished", "failed", "canceled", "aborted", "opened")
TASK_STATES = ("waiting", "running", "finished", "failed", "canceled", "aborted")
