import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if os.environ.get("MGDET_MUTATION"):
    # Mutation testing (tools/mutation.sh) forks every mutant's run from a process that ran the
    # tests once: a tf.function traced there would keep the unmutated code in the children, and
    # an op that TF splits over its thread pools would wait forever in a child (a forked process
    # has none of the parent's threads). So functions run eagerly and every op runs inline.
    import tensorflow as tf
    tf.config.run_functions_eagerly(True)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
