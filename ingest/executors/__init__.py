"""Ways to run a load's work: the local threaded executor."""
