"""The commands the console script and the invoke tasks share: one function per command."""
