"""The running process: memory, progress, the run report, the project's paths."""
