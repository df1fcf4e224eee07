"""``ptycho.workflows.components``: the name Ptychodus imports for the TensorFlow backend's workflows
(``run_cdi_example``, ``load_inference_bundle``, ``save_outputs``); they live in ``ptycho.tf.workflows``."""

from ptycho.tf.workflows import as_scan, load_inference_bundle, run_cdi_example, save_outputs, train_cdi_model

__all__ = ["run_cdi_example", "train_cdi_model", "load_inference_bundle", "save_outputs", "as_scan"]
