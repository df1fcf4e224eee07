"""``ptycho.tf_helper``: the name Ptychodus imports for ``reassemble_position``; the TensorFlow physics live in
``ptycho.tf.helper`` (importing this module imports TensorFlow, as it always did)."""

from ptycho.tf.helper import (OffsetArray, backpropagated_object, far_field_amplitude, legacy_offsets_to_xy,
                              overlap_constraint, poisson_nll, reassemble_position, translate)

__all__ = ["far_field_amplitude", "backpropagated_object", "poisson_nll", "translate", "overlap_constraint",
           "legacy_offsets_to_xy", "reassemble_position", "OffsetArray"]
