"""Training on a corpus of many scans (issue 14).

``ptycho.corpus.spec`` turns what a user passes as ``--train_data_file`` / ``--test_data_file`` (one scan file, a
directory, a glob or a text manifest) into the list of scan files, and summarises a corpus from file headers
alone. ``ptycho-simulate --corpus DIR --scans K`` (``ptycho.simulate.simulate_corpus``) writes a varied synthetic
corpus. Nothing here imports TensorFlow or torch.
"""
