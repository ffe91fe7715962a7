"""`tcvae-tf train` as one worker of a multi-worker test, keeping its final weights.

Runs the CLI with the given arguments (TF_CONFIG comes from the environment); when the
run's final model is saved (by the chief into the run folder, by another worker into its
scratch folder), its weights also go to the .npz file named by $TCVAE_TF_TEST_WEIGHTS, so
that the test can compare the workers.

    TF_CONFIG=... python tests/distributed_worker.py train dsprites-small --strategy ...
"""

import os
import sys


def main():
    import numpy as np

    from tcvae_tf import runs
    from tcvae_tf.cli.main import cli

    weights_path = os.environ.get("TCVAE_TF_TEST_WEIGHTS")
    save_model = runs.save_model

    def save_model_and_weights(model, path):
        if weights_path and os.path.basename(path) == runs.MODEL_FILE:
            np.savez(weights_path, *model.get_weights())
        save_model(model, path)

    runs.save_model = save_model_and_weights
    sys.exit(cli(sys.argv[1:], prog_name="tcvae-tf"))


if __name__ == "__main__":
    main()
