"""User jobs: the pipelines the command line calls after parsing (one module per job)."""
