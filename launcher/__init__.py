"""ptycho-launch: one command from a laptop debug run to multi-node Slurm DDP/FSDP and batch-inference job arrays.

Modules: ``cli`` (parser and dispatch), ``train_command`` / ``infer_command`` (prepare and submit a training run /
inference arrays), ``watch`` (status, logs, cancel, retry, ``--wait``), ``staging`` (what train and infer share
once validated: dry-run output, run directory start, ``--emit-sbatch``), ``validate`` (reject bad input before
anything is queued), ``profiles`` (site profiles in slurm_templates/), ``plan`` (flags + profile -> resources,
execution config -> JobPlan), ``submit`` (submitit executors, Slurm queries), ``rank_entry`` (what every rank /
array task runs), ``rundir`` (run directory files), ``arrays`` (inference chunks, manifest, per-input status),
``status`` / ``logs`` (reading runs), ``templates`` (plain sbatch scripts for sites that want a reviewable script).
"""

#: the console script's name, in every message that tells the user what to run next
PROG = "ptycho-launch"
