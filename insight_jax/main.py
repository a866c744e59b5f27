"""Entry point: parses flags and calls train.train_and_evaluate (everything else is importable).

  python -m insight_jax.main --config=configs/arithmetic_tiny.py --workdir=DIR [--config.x=v]

Configs are locked: a typo such as --config.rl.stpes=10 is an error, not a silent no-op.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from insight_jax.rl import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.is_parsed() or FLAGS["verbosity"].using_default_value:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    summary = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    print("\n== summary ==")
    for key, value in summary.items():
        print(f"{key:>28}: {value:.4g}" if isinstance(value, float) else f"{key:>28}: {value}")


if __name__ == "__main__":
    app.run(main)
