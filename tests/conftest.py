import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if os.environ.get("MGDET_MUTATION"):
    # Mutation testing (tools/mutation.sh) forks every mutant's run from a process that ran the
    # tests once: a tf.function traced there would keep the unmutated code in the children.
    import tensorflow as tf
    tf.config.run_functions_eagerly(True)
