"""ptycho-launch: one command from a laptop debug run to multi-node Slurm DDP/FSDP and batch-inference job arrays.

Modules: ``cli`` (commands), ``validate`` (reject bad input before anything is queued), ``profiles`` (site
profiles in slurm_templates/), ``plan`` (execution config -> JobPlan), ``submit`` (submitit executors, Slurm
queries), ``rank_entry`` (what every rank / array task runs), ``rundir`` (run directory files), ``arrays``
(inference chunks, manifest, per-input status), ``status`` / ``logs`` (watching runs), ``templates`` (plain
sbatch scripts for sites that want a reviewable script).
"""
