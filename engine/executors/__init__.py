"""Executors run proxy training somewhere (this machine's processes today; Slurm and Ray next).

Every executor starts the same worker (`python -m engine.executors.worker`) on a batch of runs;
the worker writes run files, and `engine.executors.base.run_swarm` schedules batches onto the
executor's slots and turns the run files into progress events.
"""
