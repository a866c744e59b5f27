"""Entry point: parses flags and calls train.train_and_evaluate (everything else is importable).

  python -m insight_jax.main --config=configs/arithmetic_tiny.py --workdir=DIR [--config.x=v]
      [--coordinator_address=HOST:PORT --num_processes=N --process_id=I]

Multi-host: every process runs the same command (on a Cloud TPU slice with no extra flags;
elsewhere with the three coordinator flags) on a workdir they share; process 0 writes the
workdir's files and prints the summary.

Configs are locked: a typo such as --config.rl.stpes=10 is an error, not a silent no-op. The
terminal shows a progress bar, a few lines of run info and the summary; library logs (orbax,
jax, absl INFO) go to DIR/train.log (--verbose_logs shows them on the terminal too).
"""

import logging as py_logging
import os

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")
flags.DEFINE_bool("verbose_logs", False, "Show library INFO logs on the terminal as well.")
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 (multi-host runs).")
flags.DEFINE_integer("num_processes", None, "Processes of a multi-host run.")
flags.DEFINE_integer("process_id", None, "This process's id, 0..num_processes-1.")
flags.mark_flags_as_required(["config", "workdir"])


def _init_distributed() -> None:
    """Starts jax.distributed for a multi-host run: with the three coordinator flags as given
    (a GPU cluster, local processes), or with no arguments on a multi-host Cloud TPU slice
    (TPU_WORKER_HOSTNAMES names more than one worker; JAX finds the coordinator itself). A
    single machine without the flags runs as one process, as before."""
    import jax

    given = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
    if any(v is not None for v in given):
        if any(v is None for v in given):
            raise app.UsageError(
                "--coordinator_address, --num_processes and --process_id go together"
            )
        jax.distributed.initialize(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
        )
    elif "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
        jax.distributed.initialize()


def _route_logs(verbose: bool) -> None:
    """absl INFO records reach Python's loggers (train_and_evaluate writes them to train.log);
    the terminal shows only warnings unless --verbose_logs."""
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().setLevel(py_logging.INFO if verbose else py_logging.WARNING)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    _route_logs(FLAGS.verbose_logs)
    _init_distributed()
    # Imported here, not at the top: multiprocessing runs this module again in every verifier
    # worker it starts (insight_jax/tasks/verifier_pool.py), which must not import the trainer.
    from insight_jax.rl import train

    try:
        summary = train.train_and_evaluate(FLAGS.config, FLAGS.workdir, log_file="train.log")
    except train.Preempted:
        return  # checkpointed; exit 0 so a scheduler restarts the same command

    import jax

    process = jax.process_index()
    if jax.process_count() > 1:
        # Every process leaves together, before exit handlers run (a process still busy in
        # one while another waits at jax.distributed's shutdown barrier can time it out).
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("end of run")
        jax.distributed.shutdown()
    if process != 0:
        return
    print("\n== summary ==")
    for key, value in summary.items():
        if key == "eval":  # {set: {avg@n, pass@k.., reward}}, the final evaluation
            for name, metrics in value.items():
                cells = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
                print(f"{'eval ' + name:>28}: {cells}")
        else:
            print(f"{key:>28}: {value:.4g}" if isinstance(value, float) else f"{key:>28}: {value}")


if __name__ == "__main__":
    app.run(main)
