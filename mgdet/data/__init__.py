"""Data sources, augmentation and the tf.data input pipeline."""
