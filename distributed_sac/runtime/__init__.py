"""What every process of the system runs on: starting and stopping processes and their command
lines (processes), a stop request from signals (stopping), bounded waits (waits) and windowed
rates (rates)."""
