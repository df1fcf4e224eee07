"""``ptycho.loader``: the name Ptychodus imports for the TensorFlow model's input container (``load``); it lives in
``ptycho.tf.loader`` and needs no TensorFlow."""

from ptycho.tf.loader import PtychoDataContainer, load

__all__ = ["PtychoDataContainer", "load"]
