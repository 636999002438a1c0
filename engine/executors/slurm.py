"""The Slurm executor: one Slurm job per batch of runs, submitted through submitit.

Each job runs the same worker as the local executor (`engine.executors.worker.main`) on the
compute node it lands on, so the project folder and the Python environment must be visible there
(a cluster's shared filesystem). The runs' status files carry the job id from submission on: a
run whose job waits in the queue or trains on another node counts as running while `squeue` lists
the job, and as interrupted once Slurm has forgotten it (time limit, preemption, scancel, a lost
node), so the next `swarm run` hands it out again. Jobs outlive the `swarm run` that submitted
them; the run files are how a later call or the app re-attaches.

slurm_cluster = "local" runs the very same submitit jobs as processes on this machine, a check of
a project's Slurm setup without a cluster (and how the tests exercise this module).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from engine.errors import ConfigError
from engine.executors.base import Executor, Slot
from engine.executors.liveness import process_start, slurm_job_alive
from engine.runs import SwarmDir
from engine.settings import ExecutorSettings


class SlurmExecutor(Executor):
    """Batches of runs as Slurm jobs (one GPU, or CPU cores, each); slots = jobs at once."""

    name = "slurm"

    def __init__(self, settings: ExecutorSettings, log_dir: Path):
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise ConfigError("[executor] kind = \"slurm\" needs submitit: pip install 'olmix-tui[slurm]'.") from None
        if settings.slurm_cluster == "slurm" and shutil.which("sbatch") is None:
            raise ConfigError(
                "[executor] kind = \"slurm\" but sbatch is not on PATH here: run on a Slurm login node, "
                "or set slurm_cluster = \"local\" in [executor] to try the setup on this machine."
            )
        self.settings = settings
        self.log_dir = Path(log_dir)

    def slots(self) -> list[Slot]:
        s = self.settings
        threads = s.slurm_cpus_per_job
        if s.slurm_cluster == "local":  # the jobs share this machine's cores
            from engine.training.device import cpu_threads

            threads = max(1, min(threads, cpu_threads() // s.slurm_max_jobs))
        return [Slot("cuda" if s.slurm_gpus_per_job else "cpu", threads) for _ in range(s.slurm_max_jobs)]

    def launch(self, swarm: SwarmDir, runs: list[str], slot: Slot):
        """Submit one job training `runs`; its files go to .olmix/logs/<swarm>/slurm/<job id>/."""
        import submitit

        from engine.executors import worker

        s = self.settings
        executor = submitit.AutoExecutor(folder=self.log_dir / swarm.id / "slurm" / "%j", cluster=s.slurm_cluster)
        params: dict = {"name": f"olmix-{swarm.id}", "timeout_min": s.slurm_timeout_min, "nodes": 1,
                        "tasks_per_node": 1, "cpus_per_task": slot.threads, f"{s.slurm_cluster}_setup": list(s.slurm_setup)}
        if s.slurm_gpus_per_job:
            params["gpus_per_node"] = s.slurm_gpus_per_job
        if s.slurm_mem_gb:
            params["mem_gb"] = s.slurm_mem_gb
        if s.slurm_cluster == "slurm":
            params["slurm_additional_parameters"] = dict(s.slurm_extra)
            if s.slurm_partition:
                params["slurm_partition"] = s.slurm_partition
            if s.slurm_account:
                params["slurm_account"] = s.slurm_account
        executor.update_parameters(**params)
        argv = [str(swarm.path), "--device", slot.device, "--threads", str(slot.threads), *runs]
        try:
            job = executor.submit(worker.main, argv)
        except Exception as err:  # sbatch refused the job (unknown partition, account, option...)
            lines = [line for line in str(err).splitlines() if line.strip()]
            raise ConfigError(
                f"Slurm refused the job ({lines[-1].strip() if lines else type(err).__name__}); check the slurm_* "
                "settings in [executor] of olmix.toml (partition, account, extra options)."
            ) from None
        if s.slurm_cluster == "slurm":
            swarm.mark_running(runs, None, slurm_job=job.job_id)
        else:  # a local job's id is its controller's pid, which lives as long as the job
            swarm.mark_running(runs, int(job.job_id), started=process_start(int(job.job_id)))
        return job

    def poll(self, job) -> int | None:
        if job.paths.result_pickle.exists():
            try:
                return int(job.result())
            except Exception:  # the job raised: its runs are marked failed by run_swarm with the detail
                return 1
        if self.settings.slurm_cluster == "slurm":
            return None if slurm_job_alive(job.job_id) else 1
        return None if not job.done() else 1

    def failure_detail(self, job) -> str:
        log = job.paths.stdout
        if job.paths.result_pickle.exists():
            error = job.exception()
            if error is not None:  # submitit's text: a header, the trace between dashed rules, the log paths
                parts = str(error).split("-" * 22)
                lines = [line for line in (parts[1] if len(parts) > 2 else parts[0]).splitlines() if line.strip()]
                return f"{lines[-1].strip() if lines else type(error).__name__} (log: {job.paths.stderr})"
            return f"the worker could not finish its runs (log: {log})"
        return f"Slurm job {job.job_id} ended without a result (killed, out of time or memory?); see {log}"
