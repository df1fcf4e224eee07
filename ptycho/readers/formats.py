"""Names of the scan formats and the file suffixes that mean HDF5, shared by the readers and their dispatch.

Why a module of its own: the format modules record their name in ``metadata["reader"]`` and ``ptycho.readers``
(the package) imports them to detect and dispatch, so the names live here, below both, and no reader imports the
package back. ``ptycho.readers`` re-exports them.
"""

NPZ = "npz"
PTYCHODUS_H5 = "ptychodus-h5"
CXI = "cxi"
FORMATS = (NPZ, PTYCHODUS_H5, CXI)

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", ".cxi", ".nxs")
