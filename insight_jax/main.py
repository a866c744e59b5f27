"""Entry point: parses flags and calls train.train_and_evaluate (everything else is importable).

  python -m insight_jax.main --config=configs/arithmetic_tiny.py --workdir=DIR [--config.x=v]

Configs are locked: a typo such as --config.rl.stpes=10 is an error, not a silent no-op. The
terminal shows a progress bar, a few lines of run info and the summary; library logs (orbax,
jax, absl INFO) go to DIR/train.log (--verbose_logs shows them on the terminal too).
"""

import logging as py_logging

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")
flags.DEFINE_bool("verbose_logs", False, "Show library INFO logs on the terminal as well.")
flags.mark_flags_as_required(["config", "workdir"])


def _route_logs(verbose: bool) -> None:
    """absl INFO records reach Python's loggers (train_and_evaluate writes them to train.log);
    the terminal shows only warnings unless --verbose_logs."""
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().setLevel(py_logging.INFO if verbose else py_logging.WARNING)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    _route_logs(FLAGS.verbose_logs)
    # Imported here, not at the top: multiprocessing runs this module again in every verifier
    # worker it starts (insight_jax/tasks/verifier_pool.py), which must not import the trainer.
    from insight_jax.rl import train

    summary = train.train_and_evaluate(FLAGS.config, FLAGS.workdir, log_file="train.log")
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
