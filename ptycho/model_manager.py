"""``ptycho.model_manager``: the name Ptychodus imports to save a TensorFlow model (``save(output_dir)``); the
bundles themselves are ``ptycho.tf.bundle``."""

from ptycho.tf.bundle import (BACKEND, WEIGHTS_SUFFIX, load_tf_bundle, read_tf_bundle, register, save,
                              write_tf_bundle)

__all__ = ["BACKEND", "WEIGHTS_SUFFIX", "register", "save", "write_tf_bundle", "read_tf_bundle", "load_tf_bundle"]
