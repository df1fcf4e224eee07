"""ptycho-launch: one command from a laptop debug run to multi-node Slurm DDP/FSDP, and job arrays that prepare
corpora and run batch inference.

Modules: ``cli`` (parser and dispatch), ``train_command`` / ``prepare_command`` / ``infer_command`` (validate and
submit a training run / corpus-preparation arrays / inference arrays), ``array_jobs`` (what the array commands
share: dry run, start, execute, retry checks), ``corpus_check`` (a corpus checked whole before queueing, and its
dry-run summary), ``watch`` (status, logs, cancel, retry, ``--wait``), ``staging`` (what every command shares once
validated: dry-run output, run directory start, ``--emit-sbatch``), ``validate`` (reject bad input before anything
is queued), ``profiles`` (site profiles in slurm_templates/), ``plan`` (flags + profile -> resources, execution
config -> JobPlan), ``submit`` (submitit executors, Slurm queries), ``rank_entry`` (what every rank / array task
runs), ``rundir`` (run directory files), ``arrays`` (chunks, manifest, status files), ``status`` / ``logs``
(reading runs), ``templates`` (plain sbatch scripts for sites that want a reviewable script).
"""

#: the console script's name, in every message that tells the user what to run next
PROG = "ptycho-launch"
